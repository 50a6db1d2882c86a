"""The bundled platform's Open311 face, tested as an Open311 client sees it: the real app on
a loopback port, each answer checked against the shared GeoReport v2 schemas, and a case
filed through either face seen as one case through both."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from open311_checks import Open311Schemas, Recorder, check_exchanges, needs_schemas
from served_app import ServedApp

from case_bridge.codes import ClassCatalog
from case_bridge.settings import CaseSettings
from simulators.platform.api import create_app
from simulators.platform.open311 import ATTRIBUTES, OPEN311_PREFIX, Open311Options
from simulators.platform.workflow import STATUS_NAMES as NAMES

pytestmark = needs_schemas

TOKEN = "face-token"
JURISDICTION = "citygw.local"
NATIVE = {"Authorization": f"Bearer {TOKEN}"}
CATALOG = ClassCatalog(CaseSettings().local_classes)
FORM = "application/x-www-form-urlencoded"


class Face:
    """The platform with its Open311 face served on loopback; every exchange recorded."""

    def __init__(self, folder: Path, options: Open311Options) -> None:
        self.recorder = Recorder(create_app(str(folder / "cases.db"), TOKEN, open311=options))
        self.served = ServedApp(self.recorder)
        self.http = httpx.Client(base_url=self.served.url, timeout=5)

    def get(self, path: str, **params: str) -> httpx.Response:
        return self.http.get(OPEN311_PREFIX + path, params=params)

    def post(self, fields: dict[str, str] | list[tuple[str, str]], path: str = "/requests.json"):
        return self.http.post(
            OPEN311_PREFIX + path, content=urlencode(fields), headers={"Content-Type": FORM}
        )

    def native(self, method: str, path: str, **kwargs) -> httpx.Response:
        return self.http.request(method, "/api/v1" + path, headers=NATIVE, **kwargs)

    def close(self) -> None:
        self.http.close()
        self.served.close()


@pytest.fixture(scope="module")
def schemas() -> Open311Schemas:
    return Open311Schemas()


@pytest.fixture
def face(tmp_path: Path, schemas: Open311Schemas) -> Iterator[Face]:
    served = Face(tmp_path, Open311Options(jurisdiction_id=JURISDICTION))
    yield served
    served.close()
    check_exchanges(schemas, served.recorder.exchanges, OPEN311_PREFIX, forms=False)


@pytest.fixture(scope="module")
def shared_face(
    tmp_path_factory: pytest.TempPathFactory, schemas: Open311Schemas
) -> Iterator[Face]:
    """One face for the tests that need no store of their own (a start costs ~0.3 s)."""
    served = Face(tmp_path_factory.mktemp("face"), Open311Options(jurisdiction_id=JURISDICTION))
    yield served
    served.close()
    check_exchanges(schemas, served.recorder.exchanges, OPEN311_PREFIX, forms=False)


def filing(**extra: str) -> dict[str, str]:
    return {
        "api_key": TOKEN,
        "jurisdiction_id": JURISDICTION,
        "service_code": "99101",
        "lat": "31.2989",
        "long": "120.5853",
        **extra,
    }


def errors(response: httpx.Response, status: int) -> list[str]:
    assert response.status_code == status, response.text
    body = response.json()
    assert all(e["code"] == status for e in body)
    return [e["description"] for e in body]


def test_services_are_our_class_codes_with_their_names(shared_face: Face) -> None:
    services = shared_face.get("/services.json", jurisdiction_id=JURISDICTION).json()
    assert [(s["service_code"], s["service_name"]) for s in services] == [
        (code, CATALOG.name(code)) for code in CATALOG
    ]
    assert {(s["type"], s["metadata"]) for s in services} == {("realtime", True)}
    definition = shared_face.get("/services/06042.json").json()
    assert definition["service_code"] == "06042"
    assert [a["code"] for a in definition["attributes"]] == [a.code for a in ATTRIBUTES]
    priority = next(a for a in definition["attributes"] if a["code"] == "priority")
    assert [v["key"] for v in priority["values"]] == ["critical", "urgent", "normal", "low"]
    assert errors(shared_face.get("/services/00000.json"), 404) == [
        "service_code '00000' not found"
    ]
    assert errors(shared_face.get("/services.json", jurisdiction_id="x.gov"), 404) == [
        "jurisdiction_id 'x.gov' not found"
    ]
    assert errors(shared_face.get("/services.xml"), 400) == [
        "format 'xml' is not served here; use .json"
    ]


def test_a_request_filed_through_open311_is_a_native_case_and_back(shared_face: Face) -> None:
    answer = shared_face.post(
        filing(
            address_string="人民路 100 号",
            description="积水 35 cm",
            media_url="http://media.example/a.jpg",
            **{
                "attribute[external_key]": "INC-1",
                "attribute[device_ids]": "WL-001,WL-002",
                "attribute[priority]": "urgent",
                "attribute[source]": "iot",
                "attribute[grid_code]": "320508001001001",
            },
        )
    )
    assert answer.status_code == 200
    [filed] = answer.json()
    assert filed["service_notice"] == "to be handled within 12 h (urgent)"
    case = shared_face.native("GET", f"/cases/{filed['service_request_id']}").json()
    assert (case["class_code"], case["class_name"], case["priority"], case["source"]) == (
        "99101", "道路积水", "urgent", "iot",
    )  # fmt: skip
    assert case["location"] == {
        "lat": 31.2989, "lon": 120.5853, "address": "人民路 100 号",
        "grid_code": "320508001001001",
    }  # fmt: skip
    assert (case["description"], case["external_key"], case["status"]) == (
        "积水 35 cm", "INC-1", "accepted",
    )  # fmt: skip
    assert [e["source_id"] for e in case["evidence"]] == ["WL-001", "WL-002", "open311"]
    [listed] = shared_face.get(f"/requests/{case['id']}.json").json()
    assert listed["status"] == "open"
    assert listed["status_notes"] == "accepted (受理)"
    assert listed["media_url"] == "http://media.example/a.jpg"
    assert listed["attributes"]["device_ids"] == "WL-001,WL-002"
    assert listed["requested_datetime"] == case["created_at"]


def test_workflow_steps_are_open_until_closed_or_void(face: Face) -> None:
    ids = [face.post(filing()).json()[0]["service_request_id"] for _ in range(2)]
    for step in ("registered", "dispatched", "handling", "verifying"):
        face.native("POST", f"/cases/{ids[0]}/transition", json={"to": step})
        [listed] = face.get(f"/requests/{ids[0]}.json").json()
        assert (listed["status"], listed["status_notes"]) == ("open", f"{step} ({NAMES[step]})")
    face.native("POST", f"/cases/{ids[0]}/transition", json={"to": "closed", "note": "清理完毕"})
    face.native("POST", f"/cases/{ids[1]}/transition", json={"to": "void", "note": "重复"})
    listed = face.get("/requests.json", service_request_id=",".join(ids)).json()
    assert [(r["status"], r["status_notes"]) for r in listed] == [
        ("closed", "closed (结案): 清理完毕"),
        ("closed", "void (作废): 重复"),
    ]
    assert face.get("/requests.json", status="open").json() == []
    assert len(face.get("/requests.json", status="closed,open").json()) == 2


def test_a_case_filed_natively_is_listed_through_open311(face: Face) -> None:
    body = {
        "class_code": "06042", "deadline": "2026-11-22T08:00:00+08:00", "source": "video",
        "location": {"lat": 31.3, "lon": 120.6}, "external_key": "INC-native",
    }  # fmt: skip
    case = face.native("POST", "/cases", json=body).json()
    [listed] = face.get("/requests.json", service_code="06042").json()
    assert listed["service_request_id"] == case["id"]
    assert listed["expected_datetime"] == "2026-11-22T00:00:00.000000+00:00"
    assert listed["attributes"] == {
        "external_key": "INC-native", "priority": "normal", "source": "video",
        "deadline": "2026-11-22T08:00:00+08:00",
    }  # fmt: skip


def test_writes_need_the_platform_token_as_api_key(shared_face: Face) -> None:
    filed = shared_face.native("GET", "/cases").json()["count"]
    assert errors(shared_face.post(filing(api_key="wrong")), 403) == ["api_key missing or invalid"]
    no_key = {k: v for k, v in filing().items() if k != "api_key"}
    assert errors(shared_face.post(no_key), 403) == ["api_key missing or invalid"]
    assert shared_face.native("GET", "/cases").json()["count"] == filed


@pytest.mark.parametrize(
    ("fields", "status", "described"),
    [
        ({"service_code": ""}, 400, "service_code: required"),
        ({"service_code": "12345"}, 404, "service_code '12345' not found"),
        ({"lat": ""}, 400, "lat: required (this server files mapped cases)"),
        ({"long": "east"}, 400, "long: not a number: 'east'"),
        ({"lat": "91"}, 400, "lat: Input should be less than or equal to 90"),
        ({"attribute[priority]": "asap"}, 400,
         "attribute[priority]: one of critical, urgent, normal, low"),
        ({"attribute[colour]": "red"}, 400,
         "'attribute[colour]': no such attribute on this server"),
        ({"attribute[part_code]": "123"}, 400, 'attribute[part_code]: must be "" or 16/17 digits'),
        ({"attribute[deadline]": "tomorrow"}, 400,
         "attribute[deadline]: must be an ISO 8601 timestamp"),
        ({"attribute[device_ids]": ",".join(f"D{i}" for i in range(20))}, 400,
         "attribute[device_ids]: at most 19 ids"),
        ({"address_id": "545483"}, 400, "address_id: not supported here; send lat and long"),
        ({"media_url": "ftp://x/y"}, 400, "media_url: must be an http(s) URL of at most 2000"),
        ({"description": "水" * 2001}, 400,
         "description: String should have at most 2000 characters"),
        ({"nickname": "x"}, 400, "unknown parameter 'nickname'"),
        ({"jurisdiction_id": "x.gov"}, 404, "jurisdiction_id 'x.gov' not found"),
    ],
)  # fmt: skip
def test_bad_fields_are_refused_naming_the_parameter(
    shared_face: Face, fields: dict[str, str], status: int, described: str
) -> None:
    assert errors(shared_face.post(filing(**fields)), status) == [described]


def test_the_form_itself_is_bounded(shared_face: Face) -> None:
    filed = shared_face.native("GET", "/cases").json()["count"]
    twice = [*filing().items(), ("lat", "30")]
    assert errors(shared_face.post(twice), 400) == ["lat: given more than once"]
    many = [*filing().items(), *((f"attribute[x{i}]", "1") for i in range(70))]
    assert errors(shared_face.post(many), 400) == ["more than 64 form fields"]
    big = shared_face.post(filing(description="x" * 70_000))
    assert errors(big, 413) == ["request body larger than 65536 bytes"]
    as_json = shared_face.http.post(OPEN311_PREFIX + "/requests.json", json=filing())
    assert errors(as_json, 400) == ["POST requests takes application/x-www-form-urlencoded"]
    assert errors(shared_face.http.delete(OPEN311_PREFIX + "/requests.json"), 404) == [
        "no such resource: 'requests.json'"
    ]
    assert shared_face.native("GET", "/cases").json()["count"] == filed


def test_listing_filters_and_orders(face: Face) -> None:
    first = face.post(filing()).json()[0]["service_request_id"]
    second = face.post(filing(service_code="06042")).json()[0]["service_request_id"]
    face.native("POST", f"/cases/{first}/transition", json={"to": "void"})  # changed last

    def ids(**params: str) -> list[str]:
        return [r["service_request_id"] for r in face.get("/requests.json", **params).json()]

    assert ids() == [second, first]  # newest filed first
    assert ids(updated_after="2020-01-01T00:00:00Z") == [second, first]
    changed = face.get(f"/requests/{first}.json").json()[0]["updated_datetime"]
    assert ids(updated_after=changed) == [first]  # at or after: inclusive
    assert ids(service_request_id=f"{second},nope,{first}") == [first, second]
    assert ids(service_code="06042") == [second]
    assert ids(status="closed") == [first]
    assert ids(start_date="2020-01-01T00:00:00Z", end_date="2020-03-01T00:00:00Z") == []
    assert errors(face.get("/requests.json", start_date="2020-01-01T00:00:00Z",
                           end_date="2020-06-01T00:00:00Z"), 400) == [
        "start_date to end_date spans more than 90 days"
    ]  # fmt: skip
    assert errors(face.get("/requests.json", status="pending"), 400) == [
        "status: each one of open, closed"
    ]
    assert errors(face.get("/requests.json", start_date="yesterday"), 400) == [
        "start_date: must be an ISO 8601 timestamp"
    ]
    assert errors(face.get("/requests.json", sort="id"), 400) == ["unknown parameter 'sort'"]
    many = ",".join(f"C{i}" for i in range(101))
    assert errors(face.get("/requests.json", service_request_id=many), 400) == [
        "service_request_id: at most 100 values"
    ]
    assert errors(face.get("/requests/nope.json"), 404) == ["service_request_id 'nope' not found"]


def test_token_answers_give_the_id_once_the_delay_has_passed(
    tmp_path: Path, schemas: Open311Schemas
) -> None:
    for delay_s, resolved in ((3600.0, False), (0.0, True)):
        (tmp_path / str(delay_s)).mkdir()
        options = Open311Options(token_answers=True, token_delay_s=delay_s)
        face = Face(tmp_path / str(delay_s), options)
        try:
            assert face.get("/services.json").json()[0]["type"] == "batch"
            [filed] = face.post(filing()).json()
            assert "service_request_id" not in filed
            case_id = face.native("GET", "/cases").json()["cases"][0]["id"]
            assert filed["token"] == f"T-{case_id}"
            answer = face.get(f"/tokens/{filed['token']}.json").json()
            resolution = {"service_request_id": case_id} if resolved else {}
            assert answer == [{"token": filed["token"]} | resolution]
            assert errors(face.get("/tokens/T-C1.json"), 404) == ["token 'T-C1' not found"]
        finally:
            face.close()
        check_exchanges(schemas, face.recorder.exchanges, OPEN311_PREFIX, forms=False)


# --- any input: an Open311 answer, never a server error -----------------------------------

FIXTURE = HealthCheck.function_scoped_fixture
names = st.sampled_from(
    ["api_key", "jurisdiction_id", "service_code", "lat", "long", "address_string",
     "description", "media_url", "email", "address_id", "attribute[priority]",
     "attribute[device_ids]", "attribute[deadline]", "attribute[external_key]",
     "attribute[part_code]", "attribute[source]", "attribute[", "x"]
)  # fmt: skip
values = st.one_of(
    st.sampled_from(["", TOKEN, JURISDICTION, "99101", "31.2", "-200", "nan", "urgent",
                     "http://m/x.jpg", "2026-11-22T08:00:00Z", "WL-1,WL-2"]),
    st.text(max_size=40),
)  # fmt: skip


@settings(max_examples=60, deadline=None, suppress_health_check=[FIXTURE])
@given(fields=st.lists(st.tuples(names, values), max_size=12))
def test_any_form_files_one_case_or_gets_an_open311_error(
    shared_face: Face, schemas: Open311Schemas, fields: list[tuple[str, str]]
) -> None:
    before = shared_face.native("GET", "/cases").json()["count"]
    response = shared_face.post(fields)
    after = shared_face.native("GET", "/cases").json()["count"]
    assert response.status_code in (200, 400, 403, 404, 413), response.text
    check_exchanges(schemas, shared_face.recorder.exchanges[-1:], OPEN311_PREFIX, forms=False)
    assert after == before + (response.status_code == 200)


query_names = st.sampled_from(
    ["service_request_id", "service_code", "status", "start_date", "end_date",
     "updated_after", "jurisdiction_id", "api_key", "page"]
)  # fmt: skip
query_values = st.one_of(
    st.sampled_from(["", "open", "closed,open", "99101,06042", "2026-11-22T08:00:00Z",
                     "2026-01-01T00:00:00+08:00", "C20261121-000001", JURISDICTION]),
    st.text(max_size=30),
)  # fmt: skip


@settings(max_examples=60, deadline=None, suppress_health_check=[FIXTURE])
@given(params=st.lists(st.tuples(query_names, query_values), max_size=6),
       path=st.sampled_from(["/requests.json", "/services.json", "/services/99101.json",
                             "/requests/C20261121-000001.json", "/tokens/T-x.json"]))  # fmt: skip
def test_any_query_gets_a_listing_or_an_open311_error(
    shared_face: Face, schemas: Open311Schemas, params: list[tuple[str, str]], path: str
) -> None:
    response = shared_face.http.get(OPEN311_PREFIX + path, params=params)
    assert response.status_code in (200, 400, 404), response.text
    check_exchanges(schemas, shared_face.recorder.exchanges[-1:], OPEN311_PREFIX, forms=False)
