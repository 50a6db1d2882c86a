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
from test_mapped_rest import Connect, case_body, example_data
from test_mapped_rest_upload import flat, pictured

from case_bridge.guarded_platform import DeliverySettings, GuardedPlatform
from case_bridge.rate_limit import RateLimitSettings
from gateway.evidence import EvidenceWriter

runner, store, connect = test_mapped_rest.runner, test_mapped_rest.store, test_mapped_rest.connect
RATE_PER_S, BURST = 10.0, 1
SLACK_S = 0.02  # loopback delivery jitter between a token and the request's arrival


def test_paged_lookups_and_uploads_take_a_token_per_request(
    connect: Connect, runner: asyncio.Runner, store: EvidenceWriter
) -> None:
    with EgovaIntakeFake(ignores_filters=True) as intake:
        for n in range(120):  # three pages of 50 for the lookup
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
    assert len(arrivals) == 2 + 1 + 3 + 1  # uploads, report, lookup pages, status listing
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
    # Each call's time leaves out its waits for tokens: none took the 0.6 s the run did.
    assert all(f["sum_s"] < 0.3 for f in calls.values())
