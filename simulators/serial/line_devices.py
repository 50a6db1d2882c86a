"""Line-protocol devices on one bus: they write their sentences (and the staged faults) to
the devices' end of a null modem at their event times."""

from __future__ import annotations

import random
import threading
import time

import serial

from simulators.scenario import Scenario
from simulators.serial.clock import EventClock
from simulators.serial.scenario import Bus, LineFault, Samples
from simulators.serial.sentences import sentence

Write = tuple[int, bytes, bool]  # (event offset ms, bytes, is a good reading)


def plan_line_bus(
    bus: Bus, timeline: Scenario, samples: dict[str, Samples], seed: int
) -> list[Write]:
    """Every write on the bus in event-time order; at equal times readings go first."""
    kinds = {b.device_id: b.kind for b in timeline.behaviours}
    writes: list[Write] = []
    for device_id in bus.devices:
        behaviour = next(b for b in timeline.behaviours if b.device_id == device_id)
        for offset in behaviour.reading_offsets_ms(timeline.duration_ms):
            row = samples[device_id].at(offset)
            writes.append((offset, sentence(kinds[device_id], device_id, row), True))
    rng = random.Random(f"{seed}/{bus.name}/faults")
    for fault in bus.faults:
        at_ms = round(fault.at * 1000)
        writes.append((at_ms, _fault_bytes(fault, at_ms, kinds, samples, rng), False))
    return sorted(writes, key=lambda w: (w[0], not w[2]))


def _fault_bytes(
    fault: LineFault,
    at_ms: int,
    kinds: dict[str, str],
    samples: dict[str, Samples],
    rng: random.Random,
) -> bytes:
    if fault.kind == "garbage":  # line noise: no "$" and no line end inside, then a line end
        noise = bytes(b for b in rng.randbytes(24) if b not in b"$\r\n")
        return noise + b"\r\n"
    assert fault.device is not None
    spoiled = sentence(
        kinds[fault.device],
        fault.device,
        samples[fault.device].at(at_ms),
        corrupt=fault.kind == "bad_checksum",
    )
    return spoiled if fault.kind == "bad_checksum" else spoiled[: len(spoiled) // 2]


class LineDevices:
    """Plays a planned bus in real time from a thread."""

    def __init__(self, path: str, baudrate: int, writes: list[Write], clock: EventClock) -> None:
        self._port = serial.Serial(path, baudrate, timeout=0.1)
        self._writes = writes
        self._clock = clock
        self._stop = threading.Event()
        self.sentences_sent = 0  # good readings written
        self.done = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"line-devices {path}")

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self._port.close()

    def _run(self) -> None:
        for offset, data, good in self._writes:
            if self._stop.wait(max(0.0, self._clock.real_at(offset) - time.monotonic())):
                return
            self._port.write(data)
            self.sentences_sent += good
        self.done.set()
