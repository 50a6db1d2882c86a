"""The rate limit counts HTTP requests, not adapter calls.

A platform's quota ("10 requests per second per key") counts what reaches it. A lookup
that pages and a filing that uploads its pictures first are one adapter call each but
several requests. Against the eGova stand-in on loopback (real HTTP, the shipped
example's mapping) behind the gateway's ``GuardedPlatform``: whatever the calls, no
window of the platform's arrivals holds more requests than the bucket allows (its burst
and its rate over the window), and the run takes as long as the rate demands.
"""

from __future__ import annotations

import asyncio
import time

import test_mapped_rest
from egova_intake import EgovaIntakeFake
from keyless_platform import KeylessBundled, KeylessPlatformFake
from open311_deviant import DeviantServer
from scripted_platform import TOKEN
from test_mapped_rest import Connect, case_body, example_data
from test_mapped_rest_upload import flat, pictured
from test_open311 import deviant_adapter
from test_outbox_dispatch import CATALOG, SETTINGS, command

from case_bridge.case_model import open_case_body
from case_bridge.guarded_platform import DeliverySettings, GuardedPlatform
from case_bridge.rate_limit import RateLimitSettings
from gateway.evidence import EvidenceWriter

runner, store, connect = test_mapped_rest.runner, test_mapped_rest.store, test_mapped_rest.connect
RATE_PER_S, BURST = 10.0, 1
SLACK_S = 0.05  # delivery jitter between a token and the arrival (old: 3 requests in ~5 ms)


def test_paged_lookups_and_uploads_take_a_token_per_request(
    connect: Connect, runner: asyncio.Runner, store: EvidenceWriter
) -> None:
    with EgovaIntakeFake(ignores_filters=True) as intake:
        for n in range(120):  # 50, 50, 20 (or 21), then the empty page that ends it
            intake.reported_by_hand(extInfo={"externalKey": f"INC-other-{n}"})
        settings = DeliverySettings(rate_limit=RateLimitSettings(requests_per_s=RATE_PER_S,
                                                                 burst=BURST))  # fmt: skip
        guarded = GuardedPlatform(connect(example_data(intake.url)), settings)
        alert = pictured(store, flat(), flat(60, 80))  # two pictures: two uploads

        async def gateway() -> None:  # the outbox and status sync, side by side
            await asyncio.gather(
                guarded.open_case(case_body(alert, "INC-a"), "INC-a/1"),
                guarded.find_case("INC-b", case_body(incident="INC-b")),
                guarded.changed_cases(None, None),
            )

        started = time.monotonic()
        runner.run(gateway())
        elapsed = time.monotonic() - started
    arrivals = sorted(r.at for r in intake.received)
    assert len(arrivals) == 2 + 1 + 4 + 1  # uploads, report, lookup pages, status listing
    assert all(r.authorised for r in intake.received)
    for first in range(len(arrivals)):
        for last in range(first, len(arrivals)):
            window_s = arrivals[last] - arrivals[first]
            assert last - first + 1 <= BURST + RATE_PER_S * (window_s + SLACK_S)
    assert elapsed >= (len(arrivals) - BURST) / RATE_PER_S - SLACK_S
    assert guarded.bucket.waits == len(arrivals) - BURST
    calls = guarded.stats()["calls"]
    assert {name: sum(f["buckets"]) for name, f in calls.items()} == {
        "open_case": 1, "find_case": 1, "changed_cases": 1,
    }  # fmt: skip
    # Each call's time leaves out its waits for tokens: none took the 0.7 s the run did.
    assert all(f["sum_s"] < 0.3 for f in calls.values())


def test_open311_discovery_and_a_paged_bundled_lookup_take_a_token_per_request(
    runner: asyncio.Runner,
) -> None:
    """Open311's start-up reads services.json and one definition: two requests, one call
    outside the wrapper even. A bundled-API lookup over five cases, two a page: three."""
    settings = DeliverySettings(rate_limit=RateLimitSettings(requests_per_s=20, burst=1))
    with DeviantServer() as deviant:
        adapter = deviant_adapter(deviant)
        guarded = GuardedPlatform(adapter, settings)
        runner.run(adapter.start())
        assert [s.path for s in deviant.seen] == ["/services.json", "/services/001.json"]
        assert guarded.bucket.waits == 1  # the burst covers the first request only
        runner.run(adapter.aclose())
    with KeylessPlatformFake() as keyless:
        for n in range(5):
            keyless.filed_elsewhere(class_code="99101", external_key=f"INC-{n}")
        guarded = GuardedPlatform(KeylessBundled(keyless.url, TOKEN, 5), settings)
        body = open_case_body(command("INC-x", 1), CATALOG, SETTINGS)
        assert runner.run(guarded.find_case("INC-x", body)) is None
        assert keyless.calls() == ["GET"] * 3
        assert guarded.bucket.waits == 2
        runner.run(guarded.aclose())
