"""Signed evidence links: what signs, what expires, what any tampering does, and where the
secret comes from (a file, a variable, or one generated once with mode 0600)."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.evidence_links import (
    GENERATED_SECRET_NAME,
    EvidenceLinks,
    links_from_settings,
    load_link_secret,
)
from gateway.evidence_settings import EvidenceSettings

SECRET = b"k" * 32
NAME = "CAM-A_z1_dumping_1700000000000.jpg"
NOW = 1_800_000_000


def parts(url: str) -> tuple[str, str, str]:
    split = urlsplit(url)
    query = parse_qs(split.query)
    return split.path, query["exp"][0], query["sig"][0]


def test_a_link_is_valid_until_its_expiry_and_not_a_second_later():
    links = EvidenceLinks(SECRET, lifetime_s=3600)
    path, exp, sig = parts(links.url(NAME, NOW))
    assert path == f"/evidence/{NAME}"
    assert exp == str(NOW + 3600)
    assert len(sig) == 64
    assert links.valid(NAME, exp, sig, NOW)
    assert links.valid(NAME, exp, sig, NOW + 3600)
    assert not links.valid(NAME, exp, sig, NOW + 3601)


def test_any_change_to_name_expiry_signature_or_secret_is_refused():
    links = EvidenceLinks(SECRET, lifetime_s=3600)
    _, exp, sig = parts(links.url(NAME, NOW))
    flipped = ("0" if sig[0] != "0" else "1") + sig[1:]
    assert not links.valid(NAME, exp, flipped, NOW)
    assert not links.valid(NAME.replace("z1", "z2"), exp, sig, NOW)
    assert not links.valid(NAME, str(int(exp) + 1), sig, NOW)  # a longer life
    assert not links.valid(NAME, "0" + exp, sig, NOW)  # the same number, other text
    assert not links.valid(NAME, exp, sig.upper(), NOW)
    assert not links.valid(NAME, exp, "", NOW)
    assert not links.valid(NAME, "", sig, NOW)
    assert not EvidenceLinks(b"x" * 32, 3600).valid(NAME, exp, sig, NOW)


def test_the_public_url_goes_in_front_of_the_link():
    links = EvidenceLinks(SECRET, 60, "https://gw.example.org")
    assert links.url(NAME, NOW).startswith(f"https://gw.example.org/evidence/{NAME}?exp=")


@settings(max_examples=300, deadline=None, derandomize=True)
@given(name=st.text(max_size=80), exp=st.text(max_size=30), sig=st.text(max_size=80))
def test_nothing_unsigned_passes_the_checker(name, exp, sig):
    assert EvidenceLinks(SECRET, 3600).valid(name, exp, sig, NOW) is False


@settings(max_examples=100, deadline=None, derandomize=True)
@given(name=st.text(min_size=1, max_size=80), now=st.integers(0, 10**11))
def test_every_link_checks_as_a_server_decodes_it_until_it_expires(name, now):
    links = EvidenceLinks(SECRET, 60)
    path, exp, sig = parts(links.url(name, now))
    assert unquote(path, errors="surrogateescape") == f"/evidence/{name}"
    assert links.valid(name, exp, sig, now + 60)
    assert not links.valid(name, exp, sig, now + 61)


# -- the secret -------------------------------------------------------------------------------


def test_without_file_or_variable_a_secret_is_generated_once_with_mode_0600(tmp_path, monkeypatch):
    monkeypatch.delenv("CITYGW_EVIDENCE_LINK_SECRET", raising=False)
    first = load_link_secret(EvidenceSettings(), tmp_path / "store")
    path = tmp_path / "store" / GENERATED_SECRET_NAME
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(first) == 64 and path.read_text() == first.decode() + "\n"
    assert load_link_secret(EvidenceSettings(), tmp_path / "store") == first  # kept
    assert sorted(os.listdir(tmp_path / "store")) == [GENERATED_SECRET_NAME]  # no draft left
    # so links signed before a restart still check after it
    before = links_from_settings(EvidenceSettings(), tmp_path / "store")
    after = links_from_settings(EvidenceSettings(), tmp_path / "store")
    _, exp, sig = parts(before.url(NAME, NOW))
    assert after.valid(NAME, exp, sig, NOW)


def test_the_file_wins_over_the_variable(tmp_path, monkeypatch):
    monkeypatch.setenv("CITYGW_EVIDENCE_LINK_SECRET", "v" * 40)
    assert load_link_secret(EvidenceSettings(), tmp_path) == b"v" * 40
    (tmp_path / "secret").write_text("f" * 40 + "\n")
    given_file = EvidenceSettings(link_secret_file=tmp_path / "secret")
    assert load_link_secret(given_file, tmp_path) == b"f" * 40
    assert not (tmp_path / GENERATED_SECRET_NAME).exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("short\n", "the secret must be 32 to 512 characters"),
        (None, "cannot read: No such file or directory"),
    ],
)
def test_a_bad_secret_file_is_named_not_shown(tmp_path: Path, content, message):
    path = tmp_path / "secret"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ValueError) as error:
        load_link_secret(EvidenceSettings(link_secret_file=path), tmp_path)
    assert str(error.value).startswith(f"evidence.link_secret_file {path}: {message}")
    assert "short" not in str(error.value)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(
    fields=st.fixed_dictionaries(
        {},
        optional={
            "max_picture_bytes": st.one_of(st.integers(-10, 10**9), st.text(max_size=8)),
            "link_lifetime_s": st.one_of(st.integers(-10, 10**9), st.none()),
            "public_url": st.one_of(
                st.text(max_size=30), st.sampled_from(["https://gw.example.org", "ftp://x"])
            ),
            "junk": st.integers(),
        },
    )
)
def test_settings_accept_only_bounded_values(fields):
    from pydantic import ValidationError

    try:
        parsed = EvidenceSettings.model_validate(fields)
    except ValidationError as exc:
        assert {str(e["loc"][0]) for e in exc.errors()} <= set(fields)
        return
    assert 16 * 1024 <= parsed.max_picture_bytes <= 32 * 1024 * 1024
    assert 60 <= parsed.link_lifetime_s <= 400 * 86_400
    assert parsed.public_url is None or parsed.public_url.startswith(("http://", "https://"))
    assert "junk" not in fields


def test_a_link_of_ours_is_signed_afresh_for_its_full_lifetime_even_when_expired():
    links = EvidenceLinks(SECRET, 3600, "https://gw.example.org")
    old = links.url(NAME, NOW)
    fresh = links.refreshed(old, NOW + 90 * 86_400)  # queued for 90 days
    path, exp, sig = parts(fresh)
    assert path == f"/evidence/{NAME}" and exp == str(NOW + 90 * 86_400 + 3600)
    assert links.valid(NAME, exp, sig, NOW + 90 * 86_400)
    moved = EvidenceLinks(SECRET, 3600, "https://new.example.org")  # public_url changed
    assert moved.refreshed(old, NOW).startswith("https://new.example.org/evidence/")


@pytest.mark.parametrize(
    "url",
    [
        "https://media.example/WL.jpg",  # someone else's picture
        "/evidence/a/b.jpg?exp=1&sig=" + "0" * 64,  # a name with a slash
        "/evidence/x.jpg?exp=1800000000&sig=" + "0" * 64,  # forged
        "/evidence/x.jpg?exp=1800000000",  # unsigned
        "",
    ],
)
def test_any_other_link_is_left_as_it_is(url: str):
    assert EvidenceLinks(SECRET, 3600).refreshed(url, NOW) == url


def test_a_link_signed_with_a_replaced_secret_stays_revoked():
    old = EvidenceLinks(b"x" * 32, 3600).url(NAME, NOW)
    assert EvidenceLinks(SECRET, 3600).refreshed(old, NOW) == old


@settings(max_examples=50, deadline=None)
@given(
    url=st.one_of(
        st.text(max_size=120),
        st.builds(lambda n, e: EvidenceLinks(SECRET, 60).url(n, e),
                  st.text(min_size=1, max_size=40), st.integers(0, 10**11)),
    )
)  # fmt: skip
def test_refreshing_any_text_gives_it_back_or_a_valid_link_to_the_same_name(url: str):
    links = EvidenceLinks(SECRET, 3600)
    fresh = links.refreshed(url, NOW)
    if fresh != url:
        path, exp, sig = parts(fresh)
        name = unquote(path.removeprefix("/evidence/"))
        assert links.valid(name, exp, sig, NOW) and exp == str(NOW + 3600)
        assert unquote(urlsplit(url).path).endswith("/evidence/" + name)
