"""Poll the Modbus RTU slaves on one RS-485 bus from a thread, emitting Readings.

A bus carries one request at a time, so a slave that does not answer costs everybody its
timeout. The scheduling keeps that cost bounded (the known weakness of polling every slave
in a fixed cycle, where one dead gauge stretches every cycle by its timeouts):

- each slave has its own next-due time and keeps its phase (due += poll_s), so a delay
  caused by a neighbour is caught up on the next poll instead of drifting;
- a failed request (no answer, a bad frame, an exception response) is retried ``retries``
  times, each retry queued behind anything already overdue rather than run back to back;
- then the slave is marked down and probed once per back-off period (doubling, capped,
  jittered): a dead slave costs one timeout per period while live ones keep their poll_s;
- when the port itself goes away no slave is blamed; it is reopened (``port.Reopener``) and
  every slave is read at once, so what the gauges hold now is not lost to the outage;
- an answer that does not fit its request (fewer registers than asked) is a dead letter
  and a failed request, retried like no answer: never a reading silently lost and counted OK.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from pymodbus.client import ModbusSerialClient
from pymodbus.exceptions import ConnectionException, ModbusException
from pymodbus.framer import FramerType

from devices.codec import decode_values
from devices.kinds import KINDS
from devices.registry import Device
from devices.rejections import Rejection
from devices.serial.port import Reopener
from devices.serial.registers import ReadBlock, block_values, read_blocks
from devices.serial.results import Clock, OnResult, decoded
from devices.serial.settings import PortSettings, SlaveSettings
from domain import Backoff, Reading

log = logging.getLogger(__name__)


# Request method of pymodbus's client per register function.
_READ = {
    "holding": "read_holding_registers",
    "input": "read_input_registers",
    "coil": "read_coils",
    "discrete": "read_discrete_inputs",
}


class SlaveFailed(Exception):
    """The slave did not give a usable answer (the bus and port are fine)."""


@dataclass(slots=True)
class _Slave:
    settings: SlaveSettings
    kind: str
    blocks: list[ReadBlock]
    backoff: Backoff
    origin: str  # "modbus:<path>#<unit>", where its dead letters say they came from
    due: float = 0.0  # monotonic
    failed_in_row: int = 0
    polls: int = 0
    ok: int = 0
    failures: int = 0
    times_down: int = 0
    down_since_ms: int | None = None
    last_ok_ms: int | None = None
    last_error: str = ""
    rejections: Counter[str] = field(default_factory=Counter)

    def stats(self) -> dict[str, Any]:
        return {
            "unit": self.settings.unit,
            "polls": self.polls,
            "ok": self.ok,
            "failures": self.failures,
            "down": self.down_since_ms is not None,
            "down_since_ms": self.down_since_ms,
            "times_down": self.times_down,
            "last_ok_ms": self.last_ok_ms,
            "last_error": self.last_error,
            "rejections": dict(self.rejections),
        }


class ModbusPoller:
    """One bus's poller thread; ``on_result`` is called from it and must not block."""

    def __init__(
        self,
        port: PortSettings,
        registry: Mapping[str, Device],
        on_result: OnResult,
        clock_ms: Clock,
        stop: threading.Event,
    ) -> None:
        self._port = port
        self._on_result = on_result
        self._clock_ms = clock_ms
        self._stop = stop
        self._slaves = [
            _Slave(
                s,
                registry[s.device].kind,
                read_blocks(s.registers),
                Backoff(port.down_backoff_s, port.down_backoff_max_s),
                f"modbus:{port.path}#{s.unit}",
            )
            for s in port.slaves
        ]
        self._client = ModbusSerialClient(
            port.path,
            framer=FramerType.RTU,
            baudrate=port.baudrate,
            bytesize=port.bytesize,
            parity=port.parity,
            stopbits=port.stopbits,  # type: ignore[arg-type]  # pyserial takes 1.5 too
            retries=0,  # retries are scheduled here, one request at a time
            timeout=max(s.timeout_s for s in port.slaves),
        )
        self._reopener = Reopener(port.path, Backoff(port.reconnect_s, port.reconnect_max_s), stop)
        self._connected = False
        self._reconnects = 0
        self._last_error = ""
        self._lock = threading.Lock()  # stats() is read from the gateway's thread
        self._thread = threading.Thread(target=self._run, name=f"serial-modbus {port.path}")

    def start(self) -> None:
        self._thread.start()

    def join(self, timeout_s: float = 5.0) -> None:
        """Wait for the thread after ``stop`` was set (at most one request timeout)."""
        self._thread.join(timeout_s)
        self._client.close()

    def stats(self) -> dict[str, Any]:
        with self._lock:
            slaves = {s.settings.device: s.stats() for s in self._slaves}
        return {
            "path": self._port.path,
            "framing": "modbus",
            "connected": self._connected,
            "reconnects": self._reconnects,
            "last_error": self._last_error,
            "slaves": slaves,
        }

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._step()
            except Exception:  # a bug must cost one poll, not the bus's thread
                log.exception("modbus poller on %s failed", self._port.path)
                self._stop.wait(1.0)

    def _step(self) -> None:
        if not self._connected:
            self._connect()
            return
        slave = min(self._slaves, key=lambda s: s.due)
        wait = slave.due - time.monotonic()
        if wait > 0:
            self._stop.wait(wait)
            return
        self._poll(slave)

    def _connect(self) -> None:
        if not self._reopener.ready():
            return
        if not self._client.connect():
            self._last_error = f"cannot open {self._port.path}"
            self._reopener.failed()
            return
        self._connected = True
        now = time.monotonic()
        for slave in self._slaves:  # read everyone at once: the outage may have hidden news
            slave.due = now

    def _poll(self, slave: _Slave) -> None:
        try:
            data = self._read(slave.settings, slave.blocks)
        except ConnectionException as exc:
            self._lost(str(exc))  # the port failed, not the slave: no poll is counted
            return
        except SlaveFailed as exc:
            self._failed(slave, str(exc))
            return
        raw = decoded(partial(_fields, slave.kind, slave.blocks, data))
        if isinstance(raw, Rejection):  # the answer does not fit the request
            self._reject(slave, raw, json.dumps(data).encode())
            self._failed(slave, raw.detail)
            return
        self._answered(slave, raw)

    def _read(self, slave: SlaveSettings, blocks: Sequence[ReadBlock]) -> list[list[Any]]:
        # pymodbus takes the response timeout from its comm params; they are per client, so
        # set them per slave before its requests.
        self._client.comm_params.timeout_connect = slave.timeout_s
        data = []
        for block in blocks:
            read = getattr(self._client, _READ[block.function])
            try:
                response = read(block.address, count=block.count, device_id=slave.unit)
            except ConnectionException:
                raise
            except ModbusException as exc:  # no answer in time, or a garbled one
                raise SlaveFailed(f"no answer: {exc}") from None
            if response.isError():
                raise SlaveFailed(f"exception response {response}")
            bits = block.function in ("coil", "discrete")
            data.append(list((response.bits if bits else response.registers)[: block.count]))
        return data

    def _answered(self, slave: _Slave, raw: dict[str, Any]) -> None:
        ts = self._clock_ms()
        if slave.down_since_ms is not None:
            log.info(
                "modbus slave %s (unit %d) answers again",
                slave.settings.device,
                slave.settings.unit,
            )
        slave.polls += 1
        slave.ok += 1
        slave.failed_in_row = 0
        slave.down_since_ms = None
        slave.last_ok_ms = ts
        slave.backoff.reset()
        self._reopener.proven()
        now = time.monotonic()
        slave.due += slave.settings.poll_s
        if slave.due < now:  # more than a period behind (a retry, a reopen): start afresh
            slave.due = now + slave.settings.poll_s
        values = decode_values(KINDS[slave.kind], raw)
        if isinstance(values, Rejection):
            self._reject(slave, values, json.dumps(raw).encode())
            return
        reading = Reading(device_id=slave.settings.device, kind=slave.kind, ts=ts, values=values)
        self._on_result(slave.origin, b"", reading)

    def _reject(self, slave: _Slave, rejection: Rejection, raw: bytes) -> None:
        with self._lock:
            slave.rejections[rejection.reason] += 1
        device_id = slave.settings.device
        self._on_result(slave.origin, raw, Rejection(rejection.reason, rejection.detail, device_id))

    def _failed(self, slave: _Slave, error: str) -> None:
        slave.polls += 1
        slave.failures += 1
        slave.failed_in_row += 1
        slave.last_error = error
        now = time.monotonic()
        if slave.down_since_ms is None and slave.failed_in_row <= slave.settings.retries:
            slave.due = now  # retry, behind whatever is already overdue
            return
        if slave.down_since_ms is None:
            slave.down_since_ms = self._clock_ms()
            slave.times_down += 1
            log.warning(
                "modbus slave %s (unit %d) is down: %s",
                slave.settings.device,
                slave.settings.unit,
                error,
            )
        slave.due = now + slave.backoff.next_delay()

    def _lost(self, error: str) -> None:
        log.warning("serial port %s lost: %s", self._port.path, error)
        self._last_error = error
        self._client.close()
        self._connected = False
        self._reconnects += 1
        self._reopener.failed()


def _fields(
    kind: str, blocks: Sequence[ReadBlock], data: list[list[Any]]
) -> dict[str, Any] | Rejection:
    """Every block's fields as codec input, or why the answer does not fit the request."""
    raw: dict[str, Any] = {}
    for block, words in zip(blocks, data, strict=True):
        values = block_values(kind, block, words)
        if isinstance(values, Rejection):
            return values
        raw.update(values)
    return raw
