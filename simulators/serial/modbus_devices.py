"""Modbus RTU slaves on one bus: pymodbus's own serial server with one device per unit id.

Each read refreshes the addressed block from the device's samples at the current event
time (a pymodbus device ``action``), encoded by the register map as a real gauge would:
scaled integers or IEEE floats, either word order, in the map's unit. A unit inside one of
its ``dead`` windows gets the request but its answer is never put on the wire (the server's
packet trace drops it), which is what a gauge with a flat battery looks like to the master;
so is a unit id no slave has.
"""

from __future__ import annotations

import asyncio
import struct
import threading
from collections import Counter
from collections.abc import Sequence

from pymodbus.framer import FramerType
from pymodbus.server import ModbusSerialServer
from pymodbus.simulator import DataType, SimData, SimDevice

from simulators.fleet.contract import SEND_UNIT_FACTORS
from simulators.serial.clock import EventClock
from simulators.serial.scenario import Bus, Register, Samples, Slave

FUNCTIONS = ("coil", "discrete", "holding", "input")  # pymodbus's block order
_FUNCTION_OF_CODE = {1: "coil", 2: "discrete", 3: "holding", 4: "input"}
_STRUCT = {"uint16": ">H", "int16": ">h", "uint32": ">I", "int32": ">i", "float32": ">f"}
_LIMITS = {
    "uint16": (0, 0xFFFF),
    "int16": (-0x8000, 0x7FFF),
    "uint32": (0, 0xFFFFFFFF),
    "int32": (-0x80000000, 0x7FFFFFFF),
}


def encode_register(register: Register, value: float | bool) -> list[int]:
    """The words a slave holds for a canonical value; a flag is 0 or 1 (one bit for a coil
    or discrete input, one register otherwise)."""
    if register.type == "bool":
        return [int(bool(value))]
    if isinstance(value, bool):
        number = float(value)
    else:
        factor = SEND_UNIT_FACTORS[register.field][register.unit] if register.unit else 1.0
        number = (value * factor - register.offset) / register.scale
    if register.type == "float32":
        raw = struct.pack(">f", number)
    else:
        low, high = _LIMITS[register.type]
        raw = struct.pack(_STRUCT[register.type], max(low, min(high, round(number))))
    words = [int.from_bytes(raw[i : i + 2], "big") for i in range(0, len(raw), 2)]
    return words[::-1] if register.word_order == "little" else words


def _sim_data(register: Register) -> SimData:
    if register.type == "bool":
        return SimData(register.address, values=[False], datatype=DataType.BITS)
    return SimData(register.address, values=[0] * register.width, datatype=DataType.REGISTERS)


class _Device:
    """One slave's registers, refreshed from its samples on every read."""

    def __init__(self, slave: Slave, samples: Samples, clock: EventClock) -> None:
        self._slave = slave
        self._samples = samples
        self._clock = clock

    def sim_device(self) -> SimDevice:
        blocks: list[list[SimData]] = []
        for function in FUNCTIONS:
            block = [_sim_data(r) for r in self._slave.registers if r.function == function]
            # pymodbus needs every block non-empty: an unmapped one is an invalid address
            # (bit blocks must hold bits, so a single false coil stands in there).
            if not block and function in ("coil", "discrete"):
                block = [SimData(0, values=[False], datatype=DataType.BITS)]
            blocks.append(block or [SimData(0, datatype=DataType.INVALID)])
        coils, discrete, holding, inputs = blocks
        return SimDevice(
            self._slave.unit, simdata=(coils, discrete, holding, inputs), action=self.refresh
        )

    async def refresh(
        self,
        function_code: int,
        start_address: int,
        _address: int,
        _count: int,
        registers: list[int],
        _set_values: Sequence[int] | Sequence[bool] | None,
    ) -> None:
        function = _FUNCTION_OF_CODE.get(function_code)
        row = self._samples.at(self._clock.offset_ms())
        for register in self._slave.registers:
            if register.function != function or register.field not in row:
                continue
            words = encode_register(register, row[register.field])
            if register.type == "bool":  # bit-addressed: word address / 16, bit address % 16
                word = register.address // 16 - start_address
                mask = 1 << register.address % 16
                registers[word] = registers[word] | mask if words[0] else registers[word] & ~mask
                continue
            at = register.address - start_address
            registers[at : at + register.width] = words


class ModbusBus:
    """A pymodbus RTU server for a bus's slaves, on its own thread and event loop."""

    def __init__(self, path: str, bus: Bus, samples: dict[str, Samples], clock: EventClock) -> None:
        self._path = path
        self._bus = bus
        self._clock = clock
        self._devices = [_Device(s, samples[s.device], clock) for s in bus.slaves]
        self._units = {s.unit for s in bus.slaves}
        self.answered: Counter[int] = Counter()  # answers put on the wire, per unit
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: ModbusSerialServer | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._serve, name=f"modbus-bus {path}")

    def start(self, timeout_s: float = 10.0) -> None:
        self._thread.start()
        if not self._ready.wait(timeout_s) or self._error is not None:
            raise RuntimeError(f"modbus server on {self._path} did not start: {self._error}")

    def stop(self) -> None:
        if self._loop is not None and self._server is not None:
            future = asyncio.run_coroutine_threadsafe(self._server.shutdown(), self._loop)
            future.result(5)
        self._thread.join(5)

    def dead_now(self) -> set[int]:
        at_s = self._clock.offset_ms() / 1000
        return {s.unit for s in self._bus.slaves if any(w.start <= at_s < w.end for w in s.dead)}

    def _trace_packet(self, sending: bool, packet: bytes) -> bytes:
        if not sending or not packet:
            return packet
        unit = packet[0]  # an RTU frame starts with the slave address
        if unit not in self._units or unit in self.dead_now():
            return b""  # pymodbus answers an absent unit with an exception; a bus is silent
        self.answered[unit] += 1
        return packet

    def _serve(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # reported by start(); the thread must end either way
            self._error = exc
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        # Unit 0 stands in for every absent unit (its answers are dropped in the trace), so
        # pymodbus does not log a traceback for each request to a slave that is not there.
        absent = SimDevice(0, simdata=[SimData(0, datatype=DataType.INVALID)])
        self._server = ModbusSerialServer(
            [absent, *(d.sim_device() for d in self._devices)],
            framer=FramerType.RTU,
            port=self._path,
            baudrate=self._bus.baudrate,
            trace_packet=self._trace_packet,
        )
        await self._server.serve_forever(background=True)
        self._ready.set()
        await self._server.serving
