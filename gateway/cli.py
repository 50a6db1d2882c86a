"""``citygw``: run the gateway, the bundled platform, the simulators, the demo."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Sequence
from functools import partial
from typing import TYPE_CHECKING

from gateway import (
    cli_backtest,
    cli_config_schema,
    cli_onvif,
    cli_silences,
    cli_thresholds,
    cli_users,
)
from gateway.logging_setup import add_logging_arguments, configure
from simulators.platform.token_source import add_token_arguments, token_from

if TYPE_CHECKING:
    from gateway.config import ApiSettings


def main(argv: Sequence[str] | None = None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    configure(args.log_format, getattr(args, "verbose", False))
    return args.handler(args)


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="citygw", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true")
    add_logging_arguments(parser)
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="run the gateway")
    run.add_argument("-c", "--config", required=True)
    run.set_defaults(handler=_run)

    replica = commands.add_parser(
        "replica", help="run one replica of a gateway on several machines (cluster section)"
    )
    replica.add_argument("-c", "--config", required=True)
    replica.set_defaults(handler=_replica)

    check = commands.add_parser("check-config", help="validate a config and explain errors")
    check.add_argument("config")
    check.set_defaults(handler=_check_config)

    platform = commands.add_parser("platform", help="run the bundled case platform")
    platform.add_argument("--host", default="127.0.0.1")
    platform.add_argument("--port", type=int, default=8081)
    platform.add_argument("--db", required=True)
    add_token_arguments(platform)
    platform.add_argument(
        "--unavailable-for",
        type=float,
        default=0.0,
        help="answer 503 for this many seconds after start (fault drill)",
    )
    platform.set_defaults(handler=partial(_platform, platform))

    broker = commands.add_parser("broker", help="run the embedded MQTT broker (amqtt)")
    broker.add_argument("--host", default="127.0.0.1")
    broker.add_argument("--port", type=int, default=1883)
    broker.set_defaults(handler=_broker)

    simulate = commands.add_parser("simulate", help="run a simulator")
    simulators = simulate.add_subparsers(required=True, metavar="SIMULATOR")
    devices = simulators.add_parser("devices", help="publish a device scenario over MQTT")
    devices.add_argument("--broker", required=True, help="mqtt://host:port")
    devices.add_argument("--scenario", default=None, help="scenario YAML (default: builtin)")
    devices.add_argument("--truth", required=True, help="where to write the ground truth JSON")
    devices.add_argument("--time-scale", type=float, default=None)
    devices.add_argument("--seed", type=int, default=1)
    devices.set_defaults(handler=_simulate_devices)
    serial = simulators.add_parser(
        "serial", help="serial devices (Modbus RTU, line protocol) behind pty null modems"
    )
    serial.add_argument("--dir", required=True, help="where the bus links are made")
    serial.add_argument("--scenario", default=None, help="serial scenario YAML (default: builtin)")
    serial.add_argument("--time-scale", type=float, default=None)
    serial.add_argument("--seed", type=int, default=1)
    serial.add_argument("--truth", default=None, help="ground truth JSON (default DIR/truth.json)")
    serial.add_argument("--config-out", default=None, help="gateway section (DIR/serial.yaml)")
    serial.set_defaults(handler=_simulate_serial)

    detect = commands.add_parser("detect", help="run an image or video through a detector")
    detect.add_argument("path")
    detect.add_argument("--model", required=True)
    detect.add_argument("--backend", default="onnxruntime", choices=["onnxruntime", "ultralytics"])
    detect.add_argument("--conf", type=float, default=0.25)
    detect.add_argument("--every", type=int, default=1, help="analyse every n-th video frame")
    detect.set_defaults(handler=_detect)

    detector = commands.add_parser("detector", help="train a detector on labelled footage")
    detector_commands = detector.add_subparsers(required=True, metavar="ACTION")
    train = detector_commands.add_parser("train", help="train with Ultralytics, export ONNX")
    train.add_argument("--data", required=True, help="YOLO data.yaml")
    train.add_argument("--out", default="var/train")
    train.add_argument("--base", default="yolov8n.yaml", help="model YAML (scratch) or .pt")
    train.add_argument("--epochs", type=int, default=40)
    train.add_argument("--imgsz", type=int, default=320)
    train.add_argument("--hours", type=float, default=None, help="time budget (hours)")
    train.set_defaults(handler=_train)

    video = simulators.add_parser("video", help="rendered street scenes for several cameras")
    video.add_argument("--scene", default=None, help="scene YAML (default: builtin)")
    video.add_argument("--truth", required=True, help="where to write the ground truth JSON")
    video.add_argument(
        "--cameras-out",
        default=None,
        help="write the gateway's video.cameras config (YAML) for the scene",
    )
    video.add_argument("--mp4", default=None, help="folder to write one MP4 per camera")
    video.add_argument("--serve", action="store_true", help="serve each camera over RTSP live")
    video.add_argument("--port", type=int, default=8554)
    video.set_defaults(handler=_simulate_video)

    footage = simulators.add_parser("footage", help="staged incidents on real footage")
    footage.add_argument("--scenario", default=None, help="footage YAML (default: builtin)")
    footage.add_argument("--assets", default=None, help="shared assets folder (media paths)")
    footage.add_argument("--out", default="var/footage", help="where the MP4 is written")
    footage.add_argument("--truth", required=True, help="where to write the ground truth JSON")
    footage.add_argument("--serve", action="store_true", help="serve each camera over RTSP")
    footage.add_argument("--port", type=int, default=8554)
    footage.set_defaults(handler=_simulate_footage)

    demo = commands.add_parser("demo", help="everything on embedded defaults, printing cases")
    demo.add_argument(
        "--duration",
        type=float,
        default=None,
        help="stop after this many seconds and compare with ground truth",
    )
    demo.add_argument("--workdir", default="var/demo")
    demo.set_defaults(handler=_demo)

    # The operations team's controls, through the running gateway's API.
    cli_thresholds.register(commands)
    cli_silences.register(commands)
    cli_backtest.register(commands)
    cli_onvif.register(commands)
    cli_users.register(commands)
    cli_config_schema.register(commands)
    return parser


def _run(args: argparse.Namespace) -> int:
    from gateway.config import ConfigError, load_config
    from gateway.service import Gateway

    try:
        config = load_config(args.config)
        gateway = Gateway(config, source=args.config)
    except (ConfigError, ValueError) as exc:
        print(f"citygw: {exc}", file=sys.stderr)
        return 2
    return _run_until_signal(gateway.run)


def _replica(args: argparse.Namespace) -> int:
    from gateway.cluster_leases import LeaseDatabaseError
    from gateway.config import ConfigError, load_config
    from gateway.replica import Replica

    try:
        replica = Replica(load_config(args.config))
    except (ConfigError, ValueError, LeaseDatabaseError) as exc:
        print(f"citygw: {exc}", file=sys.stderr)
        return 2
    return _run_until_signal(replica.run)


def _check_config(args: argparse.Namespace) -> int:
    from devices.registry import load_registry
    from devices.serial import check_registry
    from gateway.config import ConfigError, load_config
    from gateway.rule_settings import settings_from_files
    from rules.device_health import DeviceHealth
    from rules.engine import RuleEngine

    try:
        config = load_config(args.config)
        registry = load_registry(config.devices.registry)
        settings = settings_from_files(config, registry)
        engine, health = RuleEngine(settings, config.tz), DeviceHealth(settings)
        for d in registry.values():  # what only a device's own params can break
            engine.add_source(d.device_id, d.kind, d.location, d.part_code)
            health.add_device(d.device_id, d.kind, d.location, d.part_code)
        check_registry(config.serial, registry)
        config.mqtt.secret()  # a password file that cannot be read fails now, not at start
    except (ConfigError, ValueError) as exc:
        print(f"citygw: {exc}", file=sys.stderr)
        return 2
    print(f"{args.config}: OK ({len(registry)} devices)")
    print(f"api: {_api_access(config.api)}")
    return 0


def _api_access(api: ApiSettings) -> str:
    """Where the API's token comes from (never the token), and so what it serves."""
    if not api.enabled:
        return "off"
    where = f"{api.host}:{api.port}"
    if api.token_file is not None:
        return f"{where}, token from {api.token_file}"
    if api.token() is not None:
        return f"{where}, token from ${api.token_env}"
    return f"{where}, NO TOKEN (api.token_file or ${api.token_env}): only /healthz is served"


def _platform(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    from simulators.platform import serve

    serve(args.host, args.port, args.db, token_from(parser, args), args.unavailable_for)
    return 0


def _broker(args: argparse.Namespace) -> int:
    from gateway.embedded_broker import run_broker

    return _run_until_signal(lambda stop: run_broker(args.host, args.port, stop))


def _simulate_devices(args: argparse.Namespace) -> int:
    from simulators.fleet import BUILTIN_SCENARIO, run_device_simulation

    truth = run_device_simulation(
        args.broker,
        args.scenario or str(BUILTIN_SCENARIO),
        args.truth,
        time_scale=args.time_scale,
        seed=args.seed,
    )
    print(f"published {truth['published']} messages; truth written to {args.truth}")
    return 0


def _detect(args: argparse.Namespace) -> int:
    import json

    from detectors.backends import ModelError
    from detectors.detect_file import InputError, detect_path

    try:
        for detection in detect_path(args.path, args.model, args.backend, args.conf, args.every):
            print(json.dumps(detection), flush=True)
    except (InputError, ModelError) as exc:
        print(f"citygw: {exc}", file=sys.stderr)
        return 2
    return 0


def _train(args: argparse.Namespace) -> int:
    from pathlib import Path

    from detectors.training import train_detector

    result = train_detector(
        Path(args.data),
        Path(args.out),
        args.base,
        args.epochs,
        args.imgsz,
        time_budget_h=args.hours,
    )
    print(f"exported {result.onnx}: mAP50 {result.map50:.3f}, mAP50-95 {result.map50_95:.3f}")
    return 0


def _simulate_serial(args: argparse.Namespace) -> int:
    from simulators.serial.__main__ import main as serial_main

    argv = ["--dir", args.dir, "--seed", str(args.seed)]
    for flag, value in (("--scenario", args.scenario), ("--time-scale", args.time_scale),
                        ("--truth", args.truth), ("--config-out", args.config_out)):  # fmt: skip
        if value is not None:
            argv += [flag, str(value)]
    return serial_main(argv)


def _simulate_video(args: argparse.Namespace) -> int:
    import json
    from functools import partial
    from pathlib import Path

    import yaml

    from simulators.video import (
        BUILTIN_VIDEO_SCENE,
        SceneError,
        camera_zones,
        load_scene,
        render_frame,
        scene_truth,
        write_mp4,
    )

    try:
        scene = load_scene(Path(args.scene or BUILTIN_VIDEO_SCENE))
    except SceneError as exc:
        print(f"citygw: {exc}", file=sys.stderr)
        return 2
    truth = scene_truth(scene)
    Path(args.truth).write_text(json.dumps(truth, ensure_ascii=False, indent=2), "utf-8")
    cameras = [camera.id for camera in scene.cameras]
    if args.cameras_out:
        config = [
            {"id": c, "url": f"rtsp://127.0.0.1:{args.port}/{c}", "zones": camera_zones(scene, c)}
            for c in cameras
        ]
        Path(args.cameras_out).write_text(yaml.safe_dump({"cameras": config}, allow_unicode=True))
    if args.mp4:
        for camera in cameras:
            print(f"wrote {write_mp4(scene, camera, Path(args.mp4) / f'{camera}.mp4')}")
    print(f"truth: {len(truth['expected_cases'])} expected case(s) in {args.truth}", flush=True)
    if args.serve:
        from simulators.rtsp_server import serve_rtsp

        mounts = {f"/{c}": partial(render_frame, scene, c) for c in cameras}
        serve_rtsp(mounts, args.port, fps=scene.fps, size=scene.cameras[0].size)
    return 0


def _simulate_footage(args: argparse.Namespace) -> int:
    from pathlib import Path

    from simulators.footage import (
        BUILTIN_FOOTAGE,
        DEFAULT_ASSETS,
        FootageError,
        build_footage,
        load_footage_scenario,
        write_truth,
    )

    try:
        scenario = load_footage_scenario(
            Path(args.scenario or BUILTIN_FOOTAGE), Path(args.assets or DEFAULT_ASSETS)
        )
        clip = build_footage(scenario, Path(args.out))
    except FootageError as exc:
        print(f"citygw: {exc}", file=sys.stderr)
        return 2
    write_truth(scenario, Path(args.truth))
    print(f"wrote {clip} and {args.truth}")
    if args.serve:
        from simulators.rtsp_server import serve_rtsp

        mounts = {f"/{camera}": clip for camera in scenario.cameras}
        serve_rtsp(mounts, args.port, fps=scenario.fps, size=scenario.size)
    return 0


def _demo(args: argparse.Namespace) -> int:
    from gateway.demo import run_demo

    return run_demo(args.workdir, args.duration)


def _run_until_signal(start) -> int:
    async def runner() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await start(stop)

    asyncio.run(runner())
    return 0


if __name__ == "__main__":
    sys.exit(main())
