"""The console's routes (gateway/api_console.py) over real HTTP, on a gateway that is never
started: its store a real SQLite file, alerts put through its real pipeline (silence,
incidents, merge, escalation, outbox) or written by a second connection as the pipeline
writes them, the live stream read as a browser reads it.

Property tests: paging the devices and the alerts with any page size and scan bound visits
every matching row once, newest first; no query or path makes a console route answer 5xx.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path
from urllib.parse import quote

import cv2
import httpx
import numpy as np
import pytest
import yaml
from api_server import gateway_for_api
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from served_app import ServedApp, write_gateway_config

from case_bridge import outbox
from detectors.backends import Detection
from domain import Alert, AlertState, Location, Priority
from gateway import console_reads, store
from gateway.api_console import CONSOLE_DIR, alert_hub, console_files, console_router
from gateway.api_errors import install_validation_errors
from gateway.config import load_config
from gateway.console_reads import MAX_LISTED_OBSERVATIONS, AlertFilter, DeviceFilter
from gateway.service import Gateway
from rules.silences import NewSilence
from simulators.video import BUILTIN_VIDEO_SCENE, camera_zones, load_scene, render_frame

from harness import wait_until

BOUNDED = settings(
    max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
KINDS = {"bin": 5, "manhole_cover": 3, "water_level": 1}  # the builtin registry
GRIDS = 7  # distinct grid codes of the builtin registry
NOW_MS = int(time.time() * 1000)
PICTURES = ("BIN-010_bin_overflow_1.jpg", "BIN-010_bin_overflow_1_before.jpg")


def serve(gw: Gateway, **bounds: object) -> tuple[ServedApp, httpx.Client, object]:
    hub = alert_hub(gw, **bounds)
    app = FastAPI()
    install_validation_errors(app)
    app.include_router(console_router(gw, hub))
    served = ServedApp(app)
    return served, httpx.Client(base_url=served.url, timeout=5), hub


def alert(device: str, state: AlertState, ts: int, priority: Priority = Priority.URGENT,
          media: tuple[str, ...] = ()) -> Alert:  # fmt: skip
    return Alert(
        key=f"{device}/bin_overflow", source_id=device, rule_id="bin_overflow", state=state,
        class_code="06042", priority=priority, location=Location(26.083, 119.295, "收集点",
        "350102003001001"), ts=ts, summary=f"{device} {state}", media=media, kind="bin",
    )  # fmt: skip


def write_alert_rows(gw: Gateway, count: int, device: str = "BIN-020") -> None:
    """Alert rows committed by a connection of their own, as the pipeline commits them."""
    conn = store.connect(gw.config.store.path)
    try:
        batch = store.Batch()
        for n in range(count):
            body = alert(device, AlertState.FIRING, NOW_MS + n).to_dict()
            batch.alerts.append((body["key"], "firing", NOW_MS + n, None, json.dumps(body)))
        store.commit(conn, batch)
    finally:
        conn.close()


@pytest.fixture
def gateway(tmp_path) -> Gateway:
    return gateway_for_api(tmp_path)


def test_a_health_confirmation_holder_shows_the_confirm_s_the_engines_hold(gateway):
    """With threshold versions (the embedded gateway) and without them (a desk: the config
    files' settings), never an assertion."""
    in_force = gateway.engine.settings.kinds.health.confirm_s
    assert in_force == 600.0  # the default the test config keeps
    assert console_reads.holder(gateway, "confirm:BIN-001") == {
        "type": "confirm", "confirm_s": in_force
    }  # fmt: skip
    gateway.threshold_versions = None  # as a desk has none
    assert console_reads.holder(gateway, "confirm:BIN-001") == {
        "type": "confirm", "confirm_s": in_force
    }  # fmt: skip
    gateway.conn.close()


# -- static files ------------------------------------------------------------------------


def test_console_files_are_served_with_a_strict_policy_and_nothing_else(gateway):
    served, http, _ = serve(gateway)
    try:
        assert http.get("/console").headers["location"] == "/console/"
        index = http.get("/console/")
        assert index.status_code == 200 and index.headers["content-type"].startswith("text/html")
        assert "script-src 'self'" in index.headers["content-security-policy"]
        assert index.headers["x-content-type-options"] == "nosniff"
        script = http.get("/console/js/app.js")
        assert script.headers["content-type"].startswith("text/javascript")
        for path in ("/console/../gateway.db", "/console/%2e%2e/api_console.py",
                     "/console/js/../../api_console.py", "/console/nothing.js"):  # fmt: skip
            assert http.get(path).status_code == 404, path
    finally:
        served.close()


def test_every_module_the_console_imports_is_one_it_serves():
    files = console_files(CONSOLE_DIR)
    imports = 0
    for name, (body, _) in files.items():
        if not name.endswith(".js"):
            continue
        folder = Path(name).parent
        for target in re.findall(r'from "(\.{1,2}/[^"]+)"', body.decode()):
            resolved = (Path("/") / folder / target).resolve().relative_to("/").as_posix()
            assert resolved in files, f"{name} imports {target}: not served"
            imports += 1
    assert imports >= 30
    assert "index.html" in files and "console.css" in files
    # Nothing is fetched from outside: the only URL in them is SVG's namespace name.
    texts = [body.decode() for body, _ in files.values()]
    urls = {url for text in texts for url in re.findall(r"https?://[^\s\"']+", text)}
    assert urls == {"http://www.w3.org/2000/svg"}


# -- devices ----------------------------------------------------------------------------


@BOUNDED
@given(limit=st.integers(1, 12), kind=st.sampled_from([None, *KINDS]))
def test_device_pages_visit_every_device_once_in_id_order(gateway, limit, kind):
    seen, cursor = [], None
    while True:
        page = console_reads.device_page(gateway, DeviceFilter(kind=kind), limit, cursor)
        assert len(page.rows) <= limit
        seen += [row["id"] for row in page.rows]
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    expected = sorted(d for d, dev in gateway.registry.items() if kind in (None, dev.kind))
    assert seen == expected
    assert len(seen) == (sum(KINDS.values()) if kind is None else KINDS[kind])


# -- alerts, incidents, the map, through the real pipeline ------------------------------


def _staged(gw: Gateway) -> dict[str, str]:
    """A silenced bin, a bin filing a case, a neighbour merging into it at a higher
    priority (an escalation); its first command delivered, the second parked."""
    gw.silences.create(
        NewSilence(matchers={"device": "BIN-001"}, author="王工", reason="收集点改造",
                   duration_s=3600, starts_ms=NOW_MS - 60_000), NOW_MS,
    )  # fmt: skip
    pictures = tuple(f"/evidence/{name}?exp=1&sig=0#sha256=ab&bytes=3" for name in PICTURES)
    gw.pipeline.apply_alerts(
        [alert("BIN-001", AlertState.FIRING, NOW_MS),
         alert("BIN-010", AlertState.FIRING, NOW_MS + 1, media=pictures),
         alert("BIN-011", AlertState.FIRING, NOW_MS + 2, Priority.CRITICAL)], NOW_MS,
    )  # fmt: skip
    incident = gw.incidents.incident_of("BIN-010/bin_overflow")
    assert incident is not None and gw.incidents.incident_of("BIN-011/bin_overflow") == incident
    first, second = outbox.pending(gw.conn)
    outbox.mark_delivered(gw.conn, first.seq, NOW_MS + 5)
    outbox.link_case(gw.conn, incident, "C-1", NOW_MS + 5)
    outbox.park(gw.conn, second.seq, "HTTP 422: bad grid")
    return {"incident": incident}


@pytest.fixture
def staged_console(gateway):
    """The staged gateway served: a client for it, and the staged incident's id."""
    staged = _staged(gateway)
    served, http, _ = serve(gateway)
    yield http, staged
    served.close()


def test_alerts_are_listed_with_what_held_them_and_filtered(staged_console):
    http, staged = staged_console
    rows = http.get("/api/v1/console/alerts").json()["alerts"]
    assert [(r["source_id"], r["held_by"], r["incident_id"]) for r in rows] == [
        ("BIN-011", None, staged["incident"]),
        ("BIN-010", None, staged["incident"]),
        ("BIN-001", "silence:1", None),
    ]
    silence = rows[2]["holder"]["silence"]
    assert (silence["matchers"], silence["author"], silence["reason"]) == (
        {"device": "BIN-001"}, "王工", "收集点改造",
    )  # fmt: skip
    *pictures, excerpt = rows[1]["media"]  # the sensor excerpt filed with the alert last
    assert pictures == list(PICTURES)
    assert re.fullmatch(r"BIN-010_bin_overflow_\d+_excerpt_[0-9a-f]{16}\.json", excerpt)
    count = {
        query: http.get("/api/v1/console/alerts", params=params).json()["count"]
        for query, params in [
            ("held", {"held": "held"}), ("filed", {"held": "filed"}),
            ("BIN-01", {"device": "BIN-01"}), ("BIN-010", {"device": "BIN-010"}),
            ("incident", {"incident": staged["incident"]}),
        ]
    }  # fmt: skip
    assert count == {"held": 1, "filed": 2, "BIN-01": 0, "BIN-010": 1, "incident": 2}
    assert http.get("/api/v1/console/alerts", params={"cursor": "x1"}).status_code == 400


def test_an_incident_timeline_tells_alerts_merges_escalations_commands_and_answers(staged_console):
    http, staged = staged_console
    answer = http.get(f"/api/v1/console/incidents/{staged['incident']}").json()
    assert answer["incident"]["case_id"] == "C-1"
    kinds = [
        (e["type"], e.get("kind") or e.get("state") or e.get("alert", {}).get("state", ""))
        for e in answer["events"]
    ]
    assert sorted(kinds) == sorted([
        ("alert", "firing"), ("merge", "firing"), ("command", "open"),
        ("escalation", "escalate"), ("platform", "delivered"), ("platform", "parked"),
        ("case_filed", ""),
    ])  # fmt: skip
    parked = next(e for e in answer["events"] if e.get("state") == "parked")
    assert (parked["last_error"], parked["at_ms"]) == ("HTTP 422: bad grid", None)
    assert answer["events"][-1] is not None and answer["events"][-1]["at_ms"] is None
    assert answer["evidence"] == [{
        "alert_id": 2, "ts": NOW_MS + 1, "key": "BIN-010/bin_overflow",
        "annotated": PICTURES[0], "before": PICTURES[1],
    }]  # fmt: skip
    assert http.get("/api/v1/console/incidents/INC-none").status_code == 404


def test_device_states_and_the_map_layers(staged_console):
    http, staged = staged_console
    one = http.get("/api/v1/console/devices/BIN-010").json()
    assert (one["device"]["state"], one["device"]["open_incidents"]) == (
        "alerting", [staged["incident"]],
    )  # fmt: skip
    assert [i["id"] for i in one["incidents"]] == [staged["incident"]]
    assert one["alerts"]["count"] == 1
    muted = http.get("/api/v1/console/devices/BIN-001").json()["device"]
    assert (muted["state"], muted["muted"]) == ("alerting", ["silence:1"])
    states = {d["id"]: d["state"] for d in http.get("/api/v1/console/devices").json()["devices"]}
    assert sorted(d for d, s in states.items() if s == "alerting") == [
        "BIN-001", "BIN-010", "BIN-011",
    ]  # fmt: skip
    layers = http.get("/api/v1/console/map").json()
    assert (len(layers["devices"]), len(layers["grids"])) == (9, GRIDS)
    assert [i["id"] for i in layers["incidents"]] == [staged["incident"]]
    for grid in layers["grids"]:  # at least a unit grid's 100 m across
        assert (grid["north"] - grid["south"]) * 111_320 >= 99.9
    alerting = http.get("/api/v1/console/devices", params={"state": "alerting", "limit": 2})
    assert [d["id"] for d in alerting.json()["devices"]] == ["BIN-001", "BIN-010"]
    assert http.get("/api/v1/console/devices/NOPE").status_code == 404


EXAMPLE_GRIDS = (
    Path(__file__).resolve().parents[1] / "case_bridge" / "data" / "example_grids.geojson"
)


def test_the_map_draws_the_grids_file_s_polygons_and_boxes_for_grids_it_lacks(tmp_path):
    path = write_gateway_config(tmp_path, {})
    config = yaml.safe_load(path.read_text())
    config["cases"] = {"grids_file": str(EXAMPLE_GRIDS)}
    path.write_text(yaml.safe_dump(config))
    served, http, _ = serve(Gateway(load_config(path)))
    try:
        grids = http.get("/api/v1/console/map").json()["grids"]
    finally:
        served.close()
    outlined = {g["code"]: g for g in grids if g["extent"] == "polygon"}
    assert sorted(outlined) == [f"35010200100100{n}" for n in (1, 2, 3, 4)]
    north_west = outlined["350102001001001"]
    assert north_west["polygons"] == [[[[119.293, 26.086], [119.3, 26.086], [119.3, 26.094],
                                        [119.293, 26.094], [119.293, 26.086]]]]  # fmt: skip
    assert (north_west["name"], north_west["members"]) == ("示例社区西北格", 1)  # MH-001
    assert (north_west["south"], north_west["east"]) == (26.086, 119.3)
    south, west = north_west["label"]
    assert 26.086 < south < 26.094 and 119.293 < west < 119.3
    boxed = sorted(g["code"] for g in grids if g["extent"] == "members")
    assert len(boxed) == GRIDS - 2 and not set(boxed) & set(outlined)


@BOUNDED
@given(limit=st.integers(1, 6), scan=st.integers(1, 9), held=st.sampled_from(["any", "held"]))
def test_alert_pages_bounded_by_their_scan_visit_every_match_once(gateway, limit, scan, held):
    if store.count_rows(gateway.conn, "alerts") == 0:
        _staged(gateway)
        write_alert_rows(gateway, 7)
    expected = [
        row[0]
        for row in gateway.conn.execute(
            "SELECT id, held_by FROM alerts ORDER BY id DESC"
        ).fetchall()
        if held == "any" or row[1] is not None
    ]
    seen, cursor, pages = [], None, 0
    while True:
        page = console_reads.alert_page(gateway, AlertFilter(held=held), limit, cursor, scan)
        assert len(page.rows) <= limit
        seen += [row["id"] for row in page.rows]
        pages += 1
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert seen == expected
    assert pages <= len(expected) // limit + 10 // scan + 2


# -- the live stream --------------------------------------------------------------------


def _events(lines, wanted: int) -> list[tuple[str, str]]:
    """(event, data) of the next ``wanted`` events, and heartbeats as ("heartbeat", "")."""
    found, event = [], None
    for line in lines:
        if line.startswith(": heartbeat"):
            found.append(("heartbeat", ""))
        elif line.startswith("event: "):
            event = line[len("event: ") :]
        elif line.startswith("data: ") and event is not None:
            found.append((event, line[len("data: ") :]))
            event = None
        if len(found) == wanted:
            return found
    raise AssertionError(f"the stream ended after {found}")


def test_the_stream_sends_new_alerts_beats_when_idle_caps_streams_and_cleans_up(gateway):
    served, http, hub = serve(gateway, poll_s=0.05, heartbeat_s=0.3, max_streams=2)
    try:
        with http.stream("GET", "/api/v1/console/alerts/stream") as first, \
             http.stream("GET", "/api/v1/console/alerts/stream") as second:  # fmt: skip
            assert first.headers["content-type"].startswith("text/event-stream")
            refused = http.get("/api/v1/console/alerts/stream")
            assert (refused.status_code, refused.headers["retry-after"]) == (503, "5")
            lines = first.iter_lines()
            assert _events(lines, 1) == [("heartbeat", "")]
            write_alert_rows(gateway, 3)
            got = [e for e in _events(lines, 4) if e[0] != "heartbeat"][:3]
            assert [json.loads(data)["id"] for _, data in got] == [1, 2, 3]
            assert [json.loads(data)["source_id"] for _, data in got] == ["BIN-020"] * 3
            assert second.status_code == 200
        wait_until(lambda: hub.stats()["streams"] == 0, "both streams unsubscribed", 10)
        assert (hub.stats()["opened"], hub.stats()["refused"]) == (2, 1)
    finally:
        served.close()


def test_a_stream_resumes_after_its_last_event_id_bounded_with_a_gap(gateway):
    served, http, _ = serve(gateway, poll_s=0.05, heartbeat_s=5, resume_rows=3, queue_rows=8)
    try:
        write_alert_rows(gateway, 5)
        headers = {"Last-Event-ID": "3"}
        with http.stream("GET", "/api/v1/console/alerts/stream", headers=headers) as answer:
            got = _events(answer.iter_lines(), 2)
        assert [json.loads(data)["id"] for _, data in got] == [4, 5]
        with http.stream("GET", "/api/v1/console/alerts/stream",
                         headers={"Last-Event-ID": "0"}) as answer:  # fmt: skip
            got = _events(answer.iter_lines(), 4)
        assert [event for event, _ in got] == ["gap", "alert", "alert", "alert"]
        assert [json.loads(data)["id"] for _, data in got[1:]] == [3, 4, 5]
        for bad_id in ("x", "9" * 20, str(2**63)):  # not an id, or past SQLite's integers
            bad = http.get("/api/v1/console/alerts/stream", headers={"Last-Event-ID": bad_id})
            assert bad.status_code == 400, bad_id
    finally:
        served.close()


def test_a_subscriber_that_falls_behind_gets_what_was_queued_then_overflow(gateway):
    async def run() -> tuple[list[str], dict]:
        hub = alert_hub(gateway, poll_s=60, queue_rows=4, resume_rows=3)
        sub = hub.subscribe(None)
        write_alert_rows(gateway, 6)
        hub.poll_once()
        sent = [chunk async for chunk in hub.events(sub)]
        return sent, hub.stats()

    sent, stats = asyncio.run(run())
    assert sent[0].startswith("retry: ")
    assert [re.search(r"^id: (\d+)", s, re.M).group(1) for s in sent[1:5]] == ["1", "2", "3", "4"]
    assert sent[5] == "event: overflow\ndata: {}\n\n"
    assert (stats["overflowed"], stats["streams"]) == (1, 0)


# -- cameras ----------------------------------------------------------------------------

MODEL = Path(__file__).resolve().parents[1] / "models" / "citygw-street-v2.onnx"
BOX_COLOURS = {"stall": (0, 0, 255), "rubbish": (0, 128, 255)}  # BGR, as detectors/observe.py


def assert_outlined(
    image: np.ndarray, box: tuple[int, int, int, int], bgr: tuple[int, ...]
) -> None:
    """The middle half of each side of ``box`` is drawn in ``bgr`` (within JPEG's blur of
    a 2 px line), and its inside a few pixels in is not."""
    x1, y1, x2, y2 = box
    ys, xs = (
        slice(y1 + (y2 - y1) // 4, y2 - (y2 - y1) // 4),
        slice(x1 + (x2 - x1) // 4, x2 - (x2 - x1) // 4),
    )
    colour = np.array(bgr)
    for side in (image[ys, x1], image[ys, x2], image[y1, xs], image[y2, xs]):
        assert np.median(np.abs(side.astype(int) - colour).max(axis=1)) < 90, side[:4]
    inside = image[ys, x1 + 6].astype(int)
    assert np.median(np.abs(inside - colour).max(axis=1)) > 90, inside[:4]


def gateway_with_cameras(folder: Path, cameras: list[dict]) -> Gateway:
    """A gateway (never started) with these cameras and the shipped model."""
    path = write_gateway_config(folder, {})
    config = yaml.safe_load(path.read_text())
    config["video"] = {"cameras": cameras, "detector": {"model": str(MODEL), "conf": 0.35}}
    path.write_text(yaml.safe_dump(config))
    return Gateway(load_config(path))


def test_cameras_show_status_rates_zones_and_the_last_analysed_frame(tmp_path):
    zone = {"id": "Z1", "type": "no_vending", "lat": 26.0812, "lon": 119.2967,
            "polygon": [[0.1, 0.5], [0.9, 0.5], [0.9, 0.95], [0.1, 0.95]],
            "grid_code": "350102001001001"}  # fmt: skip
    gateway = gateway_with_cameras(
        tmp_path, [{"id": "CAM-1", "url": str(tmp_path / "street.mp4"), "zones": [zone]}]
    )
    served, http, _ = serve(gateway)
    try:
        [camera] = http.get("/api/v1/console/cameras").json()["cameras"]
        assert (camera["id"], camera["status"], camera["fps"]) == ("CAM-1", "connecting", None)
        assert camera["zones"][0]["polygon"][0] == [0.1, 0.5]
        assert camera["analysed"] is None
        frame_url = camera["frame_url"]
        nothing = http.get(frame_url)  # nothing analysed yet
        assert (nothing.status_code, nothing.json()) == (
            404, {"detail": "no analysed frame of this camera"})  # fmt: skip
        # The detector's answer for the frame: a stall in the zone, a person above it.
        step = gateway.video.steps["CAM-1"]
        step.detected([Detection("stall", 2, 0.8, (200, 220, 300, 330)),
                       Detection("person", 0, 0.7, (20, 20, 50, 100))])  # fmt: skip
        step.analyse(np.full((360, 640, 3), 90, np.uint8), NOW_MS)
        picture = http.get(frame_url)
        assert picture.headers["content-type"] == "image/jpeg"
        image = cv2.imdecode(np.frombuffer(picture.content, np.uint8), cv2.IMREAD_COLOR)
        assert image.shape == (360, 640, 3)
        edge = image[180, 320].astype(int)  # on the zone's top edge, drawn in (0, 200, 255)
        assert edge[2] > 200 and edge[0] < 80, edge
        assert_outlined(image, (200, 220, 300, 330), BOX_COLOURS["stall"])
        assert not (np.abs(image[10:110, 10:60].astype(int) - 90) > 12).any()  # out of zones
        [camera] = http.get("/api/v1/console/cameras").json()["cameras"]
        assert camera["fps"] is None  # the step was driven here: no frame passed the runtime
        assert camera["analysed"] == {"ts": NOW_MS, "count": 2, "observations": [
            {"label": "stall", "category": "stall_part", "track_id": 1, "zone": "Z1",
             "box": [200, 220, 300, 330], "score": 0.8, "stationary_s": 0, "occluded": False},
            {"label": "person", "category": "person", "track_id": 2, "zone": "",
             "box": [20, 20, 50, 100], "score": 0.7, "stationary_s": 0, "occluded": False},
        ]}  # fmt: skip
        # The next frame replaces it: a crowd above the zone, listed after the stall, bounded.
        crowd = [Detection("person", 0, 0.6, (10 * n, 10, 10 * n + 8, 40)) for n in range(60)]
        step.detected([*crowd, Detection("stall", 2, 0.8, (200, 220, 300, 330))])
        step.analyse(np.full((360, 640, 3), 140, np.uint8), NOW_MS + 1000)
        image = cv2.imdecode(np.frombuffer(http.get(frame_url).content, np.uint8), 1)
        assert abs(int(image[300, 600, 0]) - 140) < 6  # the new frame's grey
        analysed = http.get("/api/v1/console/cameras").json()["cameras"][0]["analysed"]
        assert (analysed["ts"], analysed["count"], len(analysed["observations"])) == (
            NOW_MS + 1000, 61, MAX_LISTED_OBSERVATIONS)  # fmt: skip
        assert [o["zone"] for o in analysed["observations"][:2]] == ["Z1", ""]
        assert http.get("/api/v1/console/cameras/NOPE/frame.jpg").status_code == 404
    finally:
        served.close()


def rendered_street_clip(folder: Path) -> tuple[np.ndarray, Path, list[dict]]:
    """The video simulator's builtin scene from CAM-A: a clip of 1 s before the stall and
    the bin bags are put down (t = 5 s), then 1 s after (t = 30 s: a stall in Z-STALL,
    bags in Z-DUMP, people walking on the far side); the last picture, the clip, the zones."""
    scene = load_scene(BUILTIN_VIDEO_SCENE)
    before, after = (render_frame(scene, "CAM-A", t_s) for t_s in (5.0, 30.0))
    clip = folder / "cam-a.mp4"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"mp4v"), 5, after.shape[1::-1])
    for picture in [before] * 5 + [after] * 5:
        writer.write(picture)
    writer.release()
    return after, clip, camera_zones(scene, "CAM-A")


def test_the_live_runtime_draws_what_its_rules_were_given_where_the_frame_shows_it(tmp_path):
    """The clip read to its end by the real supervisor and decoder, each frame analysed by
    the shipped model on the runtime's detection thread: the picture is the last frame's,
    with the boxes the rules were given for it."""
    picture, clip, zones = rendered_street_clip(tmp_path)
    gateway = gateway_with_cameras(tmp_path, [{"id": "CAM-A", "url": str(clip),
        "decoder": "opencv", "analyse_fps": 5, "zones": zones}])  # fmt: skip
    video = gateway.video
    served, http, _ = serve(gateway)
    video.start()
    try:

        def all_analysed() -> bool:  # the file read to its end, each frame analysed or dropped
            shown = video.snapshot()
            camera = shown["cameras"]["CAM-A"]
            done = camera["frames_analysed"] + shown.get("frames_dropped", 0)
            return camera["status"] == "ended" and done == camera["frames"]

        wait_until(all_analysed, "the clip analysed to its end", 15)
        [camera] = http.get("/api/v1/console/cameras").json()["cameras"]  # the first ask
        frames = camera["figures"]["frames"]
        # The rates at the first ask: the clip's frames over the time since its first (or 1 s).
        assert 0 < camera["analysed_fps"] <= camera["fps"] <= frames
        image = cv2.imdecode(np.frombuffer(http.get(camera["frame_url"]).content, np.uint8),
                             cv2.IMREAD_COLOR)  # fmt: skip
    finally:
        video.stop()
        served.close()
    assert video.snapshot().get("analysis_errors", 0) == 0
    observations = camera["analysed"]["observations"]
    assert camera["analysed"]["count"] == len(observations)
    zoned = sorted((o["label"], o["zone"]) for o in observations if o["zone"])
    assert zoned == [("rubbish", "Z-DUMP"), ("stall", "Z-STALL")]
    for seen in observations:
        if seen["zone"]:
            assert_outlined(image, seen["box"], BOX_COLOURS[seen["label"]])
    outside = [o for o in observations if not o["zone"]]
    assert outside and {o["label"] for o in outside} == {"person"}  # people on the far side
    for seen in outside:  # listed, not drawn: no rule looks at them
        x1, y1, _, y2 = seen["box"]
        edge = image[y1 + 3 : y2 - 3, x1].astype(int) - picture[y1 + 3 : y2 - 3, x1]
        assert np.abs(edge).mean() < 20, seen


# -- no request makes a route fail ------------------------------------------------------

ROUTES = [
    "/api/v1/console/map",
    "/api/v1/console/devices",
    "/api/v1/console/devices/{id}",
    "/api/v1/console/alerts",
    "/api/v1/console/incidents/{id}",
    "/api/v1/console/cameras",
    "/api/v1/console/cameras/{id}/frame.jpg",
    "/console/{id}",
]
values = st.one_of(
    st.integers(min_value=-(10**30), max_value=10**30).map(str),
    st.text(max_size=60),
    st.sampled_from(["", "0", "-1", "NaN", "..", "../gateway.db", "%00", "BIN-010", "alerting"]),
)


@pytest.fixture(scope="module")
def served_console(tmp_path_factory):
    gateway = gateway_for_api(tmp_path_factory.mktemp("console"))
    _staged(gateway)
    served, http, _ = serve(gateway)
    yield http
    served.close()


@BOUNDED
@given(
    route=st.sampled_from(ROUTES),
    segment=values,
    params=st.dictionaries(st.sampled_from(["kind", "grid", "state", "q", "limit", "cursor",
                                            "device", "incident", "held", "max_devices"]),
                           values, max_size=4),
)  # fmt: skip
def test_no_query_or_path_makes_a_console_route_fail(served_console, route, segment, params):
    path = route.replace("{id}", quote(segment, safe="") or "x")
    answer = served_console.get(path, params=params)
    assert answer.status_code < 500, (path, params, answer.text[:300])
