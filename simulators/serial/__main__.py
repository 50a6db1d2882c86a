"""``python -m simulators.serial --dir DIR`` runs a serial scenario until SIGTERM.

It makes one null modem per bus under DIR, starts the simulated devices on their far ends,
writes the gateway's ``serial`` config section (``DIR/serial.yaml``: the near ends, the
register maps, the simulated clock) and the ground truth (``DIR/truth.json``, rewritten with
``finished: true`` once the timeline has played out), and prints each bus's gateway path.
The links stay until the process is stopped, so a gateway may keep reading afterwards.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

import yaml

from simulators.scenario import ScenarioError
from simulators.serial.runner import SerialSimulation
from simulators.serial.scenario import BUILTIN_SERIAL_SCENARIO, load_serial_scenario
from simulators.truth import write_truth


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m simulators.serial", description="Serial field devices on ptys."
    )
    parser.add_argument("--scenario", default=str(BUILTIN_SERIAL_SCENARIO))
    parser.add_argument("--dir", required=True, help="where the bus links are made")
    parser.add_argument("--time-scale", type=float, default=None)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--truth", default=None, help="ground truth JSON (DIR/truth.json)")
    parser.add_argument("--config-out", default=None, help="gateway section (DIR/serial.yaml)")
    args = parser.parse_args(argv)
    try:
        scenario = load_serial_scenario(args.scenario)
    except ScenarioError as exc:
        print(f"simulators.serial: {exc}", file=sys.stderr)
        return 2
    directory = Path(args.dir)
    truth_path = Path(args.truth or directory / "truth.json")
    config_path = Path(args.config_out or directory / "serial.yaml")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    simulation = SerialSimulation(scenario, directory, args.time_scale, args.seed)
    try:
        config = {"serial": simulation.gateway_config()}
        config_path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
        for bus, path in simulation.gateway_paths.items():
            print(f"bus {bus}: {path}", flush=True)
        simulation.start()
        write_truth(truth_path, simulation.truth())
        print(f"config: {config_path}\ntruth: {truth_path}", flush=True)
        while not stop.wait(0.2):
            if simulation.finished():
                write_truth(truth_path, simulation.truth())
                print("timeline finished; holding the links until stopped", flush=True)
                break
        stop.wait()
    finally:
        write_truth(truth_path, simulation.truth())
        simulation.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
