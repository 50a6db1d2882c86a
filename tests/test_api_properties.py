"""Property tests of the gateway's HTTP routes over real HTTP: whatever an authenticated
client puts in a path segment or a query parameter, the answer is a 2xx or a 4xx with a
reason, never a 5xx (an exception that reached the server)."""

from __future__ import annotations

from urllib.parse import quote

import pytest
from api_server import ServedApi, gateway_for_api
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

TOKEN = "property-test-api-token"
ROUTES = [
    ("/api/v1/dead-letters", ("reason", "limit", "cursor")),
    ("/api/v1/outbox", ("state", "limit", "cursor")),
    ("/api/v1/incidents", ("status", "limit", "cursor")),
    ("/api/v1/devices/{id}/readings", ("since", "until", "limit", "cursor")),
    ("/api/v1/evidence/{id}", ()),
]

# What an attacker or a careless script sends: digits of any length, signs, ISO-ish text,
# percent-escapes, control characters, non-ASCII, empty strings.
values = st.one_of(
    st.integers(min_value=-(10**40), max_value=10**40).map(str),
    st.integers(min_value=0, max_value=5000).map(lambda n: "9" * n),  # 5,000 digits once 500
    st.text(alphabet="0123456789-+:.TZ ", max_size=40),
    st.text(max_size=60),
    st.sampled_from(["", "0", "-1", "1e309", "NaN", "..", "../gateway.db", "%00", "\x00"]),
)


@pytest.fixture(scope="module")
def api(tmp_path_factory, monkeypatch_module):
    tmp_path = tmp_path_factory.mktemp("api")
    monkeypatch_module.setenv("CITYGW_API_TOKEN", TOKEN)
    served = ServedApi(gateway_for_api(tmp_path), {"Authorization": f"Bearer {TOKEN}"})
    yield served
    served.close()


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


@settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    route=st.sampled_from(ROUTES),
    segment=values,
    params=st.dictionaries(st.sampled_from(["since", "until", "limit", "cursor", "reason",
                                            "state", "status", "junk"]), values, max_size=4),
)  # fmt: skip
def test_no_query_or_path_makes_the_api_fail(api, route, segment, params):
    path, _ = route
    if "{id}" in path:
        path = path.replace("{id}", quote(segment, safe="") or "x")
    response = api.http.get(path, params=params)
    assert response.status_code < 500, (path, params, response.text[:300])
