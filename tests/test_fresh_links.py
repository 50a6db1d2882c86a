"""A command that waited in the outbox past its evidence links' lifetime still sends links
that work: the gateway's wrapper signs each media link afresh as the body is sent.

Against the deviant Open311 server (``media_url`` in the form) and the eGova stand-in
(a picture uploaded as a file, read back through its renewed link; one over
``max_files`` sent as a link), both on loopback behind ``GuardedPlatform``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
import test_mapped_rest
from egova_intake import EgovaIntakeFake
from open311_deviant import DeviantServer
from test_mapped_rest import Connect, case_body, example_data
from test_mapped_rest_upload import flat, pictured
from test_open311 import body_of, command, deviant_adapter

from case_bridge.case_model import open_case_body
from case_bridge.guarded_platform import DeliverySettings, GuardedPlatform
from gateway.evidence import EvidenceWriter
from gateway.evidence_links import EvidenceLinks

runner, store, connect, intake = (
    test_mapped_rest.runner, test_mapped_rest.store, test_mapped_rest.connect,
    test_mapped_rest.intake,
)  # fmt: skip
LINKS = EvidenceLinks(b"s" * 32, 3600, "https://gw.example.cn")
WEEKS_AGO_S = int(time.time()) - 30 * 86_400


def signed(url: str) -> tuple[str, str, str]:
    split = urlsplit(url)
    query = parse_qs(split.query)
    return unquote(split.path.rpartition("/")[2]), query["exp"][0], query["sig"][0]


@pytest.fixture
def deviant() -> Iterator[DeviantServer]:
    with DeviantServer() as server:
        yield server


def test_open311_gets_a_media_url_valid_from_the_send(
    runner: asyncio.Runner, deviant: DeviantServer
) -> None:
    stale = LINKS.url("WL-001_water_high_1.jpg", WEEKS_AGO_S)  # expired a month ago
    queued = command("INC-f")
    queued = replace(queued, alert=replace(queued.alert, media=(stale,)))
    body = open_case_body(queued, test_mapped_rest.CATALOG, test_mapped_rest.CASES)
    guarded = GuardedPlatform(deviant_adapter(deviant), DeliverySettings(), LINKS.refreshed)
    runner.run(guarded.open_case(body, "INC-f/1"))
    [post] = deviant.posts()
    name, exp, sig = signed(dict(post.form)["media_url"])
    now = int(time.time())
    assert name == "WL-001_water_high_1.jpg" and LINKS.valid(name, exp, sig, now + 3500)
    assert body["evidence"][0]["media"] == [stale]  # the queued body itself is unchanged
    plain = GuardedPlatform(deviant_adapter(deviant), DeliverySettings())  # no renewal
    runner.run(plain.open_case(body_of("INC-g"), "INC-g/1"))
    assert dict(deviant.posts()[1].form)["media_url"] == "http://media.example/WL.jpg"


def test_mapped_rest_uploads_through_a_renewed_link_and_links_the_rest_fresh(
    connect: Connect, runner: asyncio.Runner, tmp_path: Path, intake: EgovaIntakeFake
) -> None:
    old_store = EvidenceWriter(tmp_path / "evidence", LINKS, 2 * 2**20)
    alert = pictured(old_store, flat(), flat(60, 80))
    stale = tuple(  # the links as signed a month ago
        LINKS.url(signed(m.partition("#")[0])[0], WEEKS_AGO_S) + "#" + m.partition("#")[2]
        for m in alert.media
    )
    data = example_data(intake.url)
    data["upload"]["max_files"] = 1  # the second picture goes as a link
    guarded = GuardedPlatform(connect(data), DeliverySettings(), LINKS.refreshed)
    body = case_body(replace(alert, media=stale))
    runner.run(guarded.open_case(body, "INC-0042/1"))
    assert len(intake.files) == 1  # read back through its renewed link, hash checked
    [event] = intake.events.values()
    name, exp, sig = signed(event["extInfo"]["photoUrl"])
    assert name.endswith("_before.jpg") and LINKS.valid(name, exp, sig, int(time.time()))
