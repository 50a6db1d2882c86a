"""The device fleet simulator: publishes a scenario's telemetry over MQTT and writes the
ground truth of what it staged (``run_device_simulation``).

Its parts, one job each: ``contract`` (topics, fields, units, rejection reasons),
``registry`` (the devices CSV), ``signal`` (baselines, steps, ramps, spikes, noise),
``faults`` (bad messages), ``message`` + ``plan`` (the run's messages in event-time order),
``mqtt`` (the acknowledged publisher) and ``runner`` (pacing and truth).

The exports are resolved lazily because ``simulators.scenario`` imports ``contract`` and
``registry`` from this package while ``runner`` imports ``simulators.scenario``: importing
the runner here eagerly would make that a circular import.
"""

from __future__ import annotations

from typing import Any

__all__ = ["BUILTIN_SCENARIO", "run_device_simulation"]


def __getattr__(name: str) -> Any:
    if name == "run_device_simulation":
        from simulators.fleet.runner import run_device_simulation

        return run_device_simulation
    if name == "BUILTIN_SCENARIO":
        from simulators.scenario import BUILTIN_SCENARIO

        return BUILTIN_SCENARIO
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
