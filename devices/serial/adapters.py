"""Start every configured serial port (line readers and Modbus pollers) behind one handle.

This is the gateway's only entry point into ``devices.serial``: ``start_serial`` checks the
section against the registry, starts one thread per port and returns ``SerialAdapters``
(``stats()``, ``stop()``). Results arrive on the callers' ``on_result`` from those threads.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from typing import Any

from devices.registry import Device
from devices.serial.line_reader import LineReader
from devices.serial.modbus_poller import ModbusPoller
from devices.serial.port import LineSettings, ReconnectingPort
from devices.serial.results import Clock, OnResult
from devices.serial.settings import SerialSettings, SimulatedClock, registry_problems
from domain import Backoff


class SerialConfigError(ValueError):
    """The serial section does not fit the registry; the message lists every problem."""


class SerialAdapters:
    """The running serial ports."""

    def __init__(self, adapters: list[LineReader | ModbusPoller], stop: threading.Event) -> None:
        self._adapters = adapters
        self._stop = stop

    def stats(self) -> dict[str, Any]:
        """Per port (by path): connection, reconnects, and line or per-slave counters."""
        return {stats["path"]: stats for stats in (a.stats() for a in self._adapters)}

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop every thread and close every port; returns once they have ended."""
        self._stop.set()
        for adapter in self._adapters:
            adapter.join(timeout_s)


def start_serial(
    settings: SerialSettings,
    registry: Mapping[str, Device],
    on_result: OnResult,
    clock_ms: Clock | None = None,
) -> SerialAdapters:
    """Start all ports. ``clock_ms`` stamps readings (default: the wall clock, or the
    settings' simulated clock)."""
    check_registry(settings, registry)
    clock = clock_ms or _clock(settings.simulated_clock)
    stop = threading.Event()
    adapters: list[LineReader | ModbusPoller] = []
    for port in settings.ports:
        if port.framing == "modbus":
            adapters.append(ModbusPoller(port, registry, on_result, clock, stop))
            continue
        line = LineSettings(port.baudrate, port.bytesize, port.parity, port.stopbits)
        backoff = Backoff(port.reconnect_s, port.reconnect_max_s)
        reader_port = ReconnectingPort(port.path, line, backoff, stop)
        adapters.append(LineReader(reader_port, registry, on_result, clock, stop))
    for adapter in adapters:
        adapter.start()
    return SerialAdapters(adapters, stop)


def check_registry(settings: SerialSettings, registry: Mapping[str, Device]) -> None:
    """Raise SerialConfigError naming every slave the registry contradicts (unknown device,
    a field its kind lacks, a unit it cannot take), before any port is opened."""
    problems = registry_problems(settings, registry)
    if problems:
        raise SerialConfigError(
            "serial: "
            + "; ".join(".".join(str(p) for p in loc) + f": {msg}" for loc, msg in problems)
        )


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


def _clock(simulated: SimulatedClock | None) -> Clock:
    if simulated is None:
        return wall_clock_ms
    origin_ms = wall_clock_ms() - simulated.starts_s_ago * 1000
    started = time.monotonic()
    scale = simulated.time_scale
    return lambda: int(origin_ms + (time.monotonic() - started) * 1000 * scale)
