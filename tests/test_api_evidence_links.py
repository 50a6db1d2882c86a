"""Signed evidence links over real HTTP, as a city platform fetches a case's media: no token,
the exact bytes whose SHA-256 is on the case; an expired, tampered or unsigned link 403
whether or not the picture exists; the bare-name route still behind the token."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from dataclasses import replace
from urllib.parse import quote

import pytest
from api_server import ServedApi, gateway_for_api
from evidence_pictures import ALERT, STEM, scene
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from case_bridge.case_model import evidence_item
from gateway.evidence_links import GENERATED_SECRET_NAME

TOKEN = "0123456789abcdef-api-token"
NAME = f"{STEM}.jpg"


@pytest.fixture(scope="module")
def api(tmp_path_factory) -> Iterator[ServedApi]:
    tmp_path = tmp_path_factory.mktemp("evidence")
    (tmp_path / "api-token").write_text(TOKEN + "\n")
    served = ServedApi(gateway_for_api(tmp_path, {"token_file": "api-token"}))
    yield served
    served.close()
    served.gateway.conn.close()


@pytest.fixture(scope="module")
def filed(api) -> dict:
    """The case's evidence item for a picture saved now: its link, hash and size."""
    image = scene(7, 240, 320)
    now = int(time.time())
    media = api.gateway.evidence.save(ALERT, image, None, now)
    [file] = evidence_item(replace(ALERT, media=media))["media_files"]
    return file


def test_a_signed_link_serves_the_exact_bytes_on_the_case_without_the_token(api, filed):
    assert filed["url"].startswith(f"/evidence/{NAME}?exp=")
    response = api.http.get(filed["url"])
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/jpeg"
    assert hashlib.sha256(response.content).hexdigest() == filed["sha256"]
    assert len(response.content) == filed["bytes"]
    key = api.gateway.config.store.path.parent / GENERATED_SECRET_NAME
    assert key.stat().st_mode & 0o777 == 0o600


def test_an_expired_or_tampered_link_is_refused(api, filed):
    links = api.gateway.evidence.links
    expired = links.url(NAME, 1_000_000_000)  # signed right, long past
    path, _, query = filed["url"].partition("?")
    exp, sig = (pair.split("=")[1] for pair in query.split("&"))
    flipped = ("0" if sig[0] != "0" else "1") + sig[1:]
    for url in (
        expired,
        f"{path}?exp={int(exp) + 86_400}&sig={sig}",  # a longer life
        f"{path}?exp={exp}&sig={flipped}",
        f"{path}?exp={exp}",
        path,
        f"/evidence/{NAME.replace('z1', 'z2')}?{query}",  # another picture, this signature
    ):
        response = api.http.get(url)
        assert (response.status_code, response.json()) == (
            403,
            {"detail": "this evidence link is not signed, or has expired"},
        ), url


def test_a_signed_link_to_a_deleted_picture_is_404(api):
    url = api.gateway.evidence.links.url("CAM-A_z1_dumping_1.jpg", int(time.time()))
    assert api.http.get(url).status_code == 404


def test_the_bare_name_route_still_needs_the_token(api, filed):
    assert api.http.get(f"/api/v1/evidence/{NAME}").status_code == 401
    authed = api.http.get(f"/api/v1/evidence/{NAME}", headers={"Authorization": f"Bearer {TOKEN}"})
    assert (authed.status_code, hashlib.sha256(authed.content).hexdigest()) == (
        200,
        filed["sha256"],
    )
    assert api.http.get("/api/v1/stats").status_code == 401  # /evidence/ opened nothing else


def test_a_signed_link_cannot_reach_outside_the_folder(api):
    folder = api.gateway.evidence_dir
    outside = folder.parent / "outside_1700000000000.jpg"
    outside.write_bytes(b"\xff\xd8 not for links")
    (folder / "CAM-A_z1_dumping_1700000000009.jpg").symlink_to(outside)
    now = int(time.time())
    links = api.gateway.evidence.links
    for name in (
        "CAM-A_z1_dumping_1700000000009.jpg",  # a symlink out
        "../outside_1700000000000.jpg",
        "gateway.db",
        GENERATED_SECRET_NAME,
    ):
        url = links.url(name, now)
        assert api.http.get(url).status_code == 404, name


@settings(
    max_examples=80,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    name=st.one_of(st.text(min_size=1, max_size=40), st.just(NAME)),
    exp=st.one_of(st.text(max_size=20), st.integers(-(10**30), 10**30).map(str)),
    sig=st.one_of(st.text(max_size=70), st.text("0123456789abcdef", min_size=64, max_size=64)),
)
def test_any_name_exp_and_sig_get_403_or_404_never_a_server_error(api, name, exp, sig):
    assume(name not in (".", ".."))  # the client resolves them away from /evidence/
    response = api.http.get(f"/evidence/{quote(name, safe='')}", params={"exp": exp, "sig": sig})
    assert response.status_code in (403, 404), (name, exp, sig, response.text[:200])
