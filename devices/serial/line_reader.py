"""Read line-protocol sentences from one serial port in a thread, and hand each decoded
Reading or Rejection to a callback.

Framing is kept apart from parsing (``LineFramer`` is pure) because a serial line is a byte
stream with no message boundaries: noise, a cut cable or a device rebooting mid-sentence
leave partial and overlong lines, and each must end up as one counted ``garbage``
rejection instead of a crash, a silent drop, or an unbounded buffer.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

from devices.registry import Device
from devices.rejections import Reason, Rejection
from devices.serial.line_protocol import MAX_SENTENCE_BYTES, parse_line
from devices.serial.port import ReconnectingPort
from devices.serial.results import Clock, OnResult, Result, decoded
from domain import Reading

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Garbage:
    """A run of bytes that belongs to no sentence."""

    size: int
    why: str


class LineFramer:
    """Splits a byte stream into ``$``..``\\n`` lines, holding at most ``max_bytes``.

    A ``$`` always starts a new sentence, so a sentence cut short by the next one is given
    up (as garbage) rather than glued to it. Bytes outside sentences are garbage, except
    bare line ends; one run of them (up to a line end or a ``$``) is one ``Garbage``.
    """

    def __init__(self, max_bytes: int = MAX_SENTENCE_BYTES) -> None:
        self._max = max_bytes
        self._line = bytearray()  # the sentence being received, from its "$"
        self._junk = 0  # size of the garbage run being skipped
        self._junk_why = ""

    def feed(self, data: bytes) -> list[bytes | Garbage]:
        out: list[bytes | Garbage] = []
        for byte in data:
            if byte == 0x24:  # "$"
                if self._line:
                    self._skip(len(self._line), "sentence cut short by the next one")
                    self._line.clear()
                self._end_junk(out)
                self._line.append(byte)
            elif self._line:
                self._line.append(byte)
                if byte == 0x0A:
                    out.append(bytes(self._line))
                    self._line.clear()
                elif len(self._line) > self._max:
                    self._skip(len(self._line), f"line over {self._max} bytes")
                    self._line.clear()
            elif byte == 0x0A:
                self._end_junk(out)
            elif byte != 0x0D or self._junk:  # a lone "\r" between sentences is no garbage
                self._skip(1, "bytes outside a sentence")
        return out

    def _skip(self, size: int, why: str) -> None:
        if not self._junk:
            self._junk_why = why
        self._junk += size

    def _end_junk(self, out: list[bytes | Garbage]) -> None:
        if self._junk:
            out.append(Garbage(self._junk, self._junk_why))
            self._junk, self._junk_why = 0, ""


class LineReader:
    """One port's reader thread. ``on_result`` is called from that thread, so it must only
    hand the result over (e.g. ``loop.call_soon_threadsafe``), never block."""

    def __init__(
        self,
        port: ReconnectingPort,
        registry: Mapping[str, Device],
        on_result: OnResult,
        clock_ms: Clock,
        stop: threading.Event,
    ) -> None:
        self._port = port
        self._registry = registry
        self._on_result = on_result
        self._origin = f"serial:{port.path}"
        self._clock_ms = clock_ms
        self._stop = stop
        self._framer = LineFramer()
        self._lines = 0
        self._readings = 0
        self._rejections: Counter[str] = Counter()
        self._garbage_bytes = 0
        self._last_reading_ms: int | None = None
        self._lock = threading.Lock()  # stats() is read from the gateway's thread
        self._thread = threading.Thread(target=self._run, name=f"serial-line {port.path}")

    def start(self) -> None:
        self._thread.start()

    def join(self, timeout_s: float = 5.0) -> None:
        """Wait for the thread after ``stop`` was set (it notices within a read timeout)."""
        self._thread.join(timeout_s)
        self._port.close()

    def stats(self) -> dict[str, Any]:
        with self._lock:
            rejections = dict(self._rejections)
        return {
            "path": self._port.path,
            "framing": "line",
            "connected": self._port.is_open,
            "reconnects": self._port.reconnects,
            "last_error": self._port.last_error,
            "lines": self._lines,
            "readings": self._readings,
            "rejections": rejections,
            "garbage_bytes": self._garbage_bytes,
            "last_reading_ms": self._last_reading_ms,
        }

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                for item in self._framer.feed(self._port.read()):
                    self._emit(item)
            except Exception:  # a bug must cost one chunk of bytes, not the port's thread
                log.exception("serial line reader on %s failed on a chunk", self._port.path)
                time.sleep(0.1)

    def _emit(self, item: bytes | Garbage) -> None:
        raw = b""  # noise is counted and described, not kept
        if isinstance(item, Garbage):
            self._garbage_bytes += item.size
            result: Result = Rejection(
                Reason.GARBAGE, f"{self._port.path}: {item.size} byte(s), {item.why}"
            )
        else:
            raw = item
            self._lines += 1
            result = decoded(partial(parse_line, item, self._registry, self._clock_ms()))
            if isinstance(result, Rejection) and result.reason == Reason.GARBAGE:
                self._garbage_bytes += len(item)
        if isinstance(result, Reading):
            self._readings += 1
            self._last_reading_ms = result.ts
        else:
            with self._lock:
                self._rejections[result.reason] += 1
        self._on_result(self._origin, raw, result)
