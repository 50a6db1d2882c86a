"""Run a serial scenario: one null modem per bus, the simulated devices on its far end, the
gateway's ``serial`` config section for the near ends, and the ground truth.

Serial devices have no clock, so the gateway stamps their readings; to compress time it is
told to run its receive clock at the scenario's time scale (``simulated_clock`` in the
config written here). Its clock starts ``2 × duration`` in the past, so that even a gateway
started a whole run before the simulator stamps nothing ahead of the wall clock.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from simulators.serial.clock import EventClock
from simulators.serial.line_devices import LineDevices, plan_line_bus
from simulators.serial.modbus_devices import ModbusBus
from simulators.serial.null_modem import NullModem
from simulators.serial.scenario import SerialScenario


class SerialSimulation:
    """The running buses of one scenario; ``close()`` stops the devices and removes the
    links."""

    def __init__(
        self,
        scenario: SerialScenario,
        directory: str | Path,
        time_scale: float | None = None,
        seed: int = 1,
    ) -> None:
        self.scenario = scenario
        self.time_scale = time_scale or scenario.timeline.spec.time_scale
        if self.time_scale <= 0:
            raise ValueError(f"time_scale must be positive, got {self.time_scale}")
        self.directory = Path(directory)
        self._seed = seed
        self.modems = {b.name: NullModem(self.directory / b.name) for b in scenario.spec.buses}
        self._line: list[LineDevices] = []
        self._modbus: list[ModbusBus] = []
        self.clock = EventClock(self.time_scale)

    @property
    def gateway_paths(self) -> dict[str, str]:
        return {name: modem.gateway_path for name, modem in self.modems.items()}

    def start(self) -> None:
        """Start every bus; event time 0 is now."""
        samples = self.scenario.samples(self._seed)
        self.clock = EventClock(self.time_scale)
        for bus in self.scenario.spec.buses:
            path = self.modems[bus.name].devices_path
            if bus.framing == "modbus":
                modbus = ModbusBus(path, bus, samples, self.clock)
                modbus.start()
                self._modbus.append(modbus)
            else:
                writes = plan_line_bus(bus, self.scenario.timeline, samples, self._seed)
                line = LineDevices(path, bus.baudrate, writes, self.clock)
                line.start()
                self._line.append(line)

    def finished(self) -> bool:
        """The timeline has played out (every line write made; the gauges now hold still)."""
        return self.clock.offset_ms() >= self.scenario.timeline.duration_ms and all(
            line.done.is_set() for line in self._line
        )

    def close(self) -> None:
        for line in self._line:
            line.stop()
        for modbus in self._modbus:
            modbus.stop()
        for modem in self.modems.values():
            modem.close()

    def gateway_config(self) -> dict[str, Any]:
        """The gateway's ``serial`` section for these buses (their gateway ends)."""
        behaviours = {b.device_id: b for b in self.scenario.timeline.behaviours}
        ports: list[dict[str, Any]] = []
        for bus in self.scenario.spec.buses:
            port: dict[str, Any] = {
                "path": self.modems[bus.name].gateway_path,
                "framing": bus.framing,
                "baudrate": bus.baudrate,
            }
            if bus.framing == "modbus":
                port["down_backoff_s"] = bus.down_backoff_s
                port["down_backoff_max_s"] = bus.down_backoff_max_s
                port["slaves"] = [
                    {
                        "unit": slave.unit,
                        "device": slave.device,
                        "poll_s": behaviours[slave.device].interval_ms / 1000 / self.time_scale,
                        "timeout_s": bus.timeout_s,
                        "retries": bus.retries,
                        "registers": [r.model_dump(exclude_none=True) for r in slave.registers],
                    }
                    for slave in bus.slaves
                ]
            ports.append(port)
        duration_s = self.scenario.timeline.spec.duration_s
        clock = {"time_scale": self.time_scale, "starts_s_ago": 2 * duration_s}
        return {"simulated_clock": clock, "ports": ports}

    def truth(self) -> dict[str, Any]:
        """What was staged, in the fleet's truth shape, plus what the devices sent."""
        return {
            "scenario": self.scenario.spec.name,
            "finished": self.finished(),
            "time_scale": self.time_scale,
            "duration_s": self.scenario.timeline.spec.duration_s,
            "sentences_sent": sum(line.sentences_sent for line in self._line),
            "modbus_answers": sum(sum(m.answered.values()) for m in self._modbus),
            **self.scenario.expected_truth(),
        }
