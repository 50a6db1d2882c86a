"""A serial port that survives being unplugged.

Field buses hang off USB–RS-485 adapters that get pulled, re-enumerated or power-cycled.
The port is opened by a stable path (``/dev/serial/by-id/...``); when it fails (an
``OSError``, which includes pyserial's ``SerialException``: EIO on read or write, or "ready
to read but returned no data" once the device is gone) it is closed, the loss is counted,
and it is reopened: at once when the path reappears after being gone (the adapter is back:
read what the devices hold now instead of sleeping out a back-off), otherwise after the
project's exponential back-off with jitter (``domain.retry.Backoff``), capped, so a port
that is there but refuses to open does not spin. ``Reopener`` holds that policy for the
Modbus client too. Nothing here raises out of the reading thread.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from dataclasses import dataclass

import serial

from domain.retry import Backoff

log = logging.getLogger(__name__)

# How often a missing path is looked for while waiting to reopen.
PATH_CHECK_S = 0.1


class Reopener:
    """When to try opening a lost port again: at once when its path reappears, else on the
    back-off. Waits in short steps (``PATH_CHECK_S``) so that stopping and a path coming
    back are both noticed quickly."""

    def __init__(self, path: str, backoff: Backoff, stop: threading.Event) -> None:
        self.path = path
        self._backoff = backoff
        self._stop = stop
        self._retry_at = 0.0  # monotonic time before which no open is tried
        self._path_was_gone = False

    def ready(self) -> bool:
        """True when an open should be tried now; otherwise waits one step and says False."""
        if not os.path.exists(self.path):
            self._path_was_gone = True
            self._stop.wait(PATH_CHECK_S)
            return False
        if self._path_was_gone:  # a replugged adapter: try it at once
            self._path_was_gone = False
            self._retry_at = 0.0
        wait = self._retry_at - time.monotonic()
        if wait > 0:
            self._stop.wait(min(wait, PATH_CHECK_S))
            return False
        return not self._stop.is_set()

    def failed(self) -> None:
        """The open failed or the open port was lost: the next try waits the back-off."""
        self._retry_at = time.monotonic() + self._backoff.next_delay()

    def proven(self) -> None:
        """The port worked (data came): the next loss starts the back-off afresh."""
        self._backoff.reset()


@dataclass(frozen=True, slots=True)
class LineSettings:
    """How the UART is set up; on a pty these are accepted and ignored."""

    baudrate: int = 9600
    bytesize: int = 8
    parity: str = "N"
    stopbits: float = 1


class ReconnectingPort:
    """Reads from one serial path, reopening it whenever it goes away.

    ``read`` blocks until data, the read timeout, or ``stop`` is set, and returns ``b""`` in
    the last two cases; it never raises for port trouble.
    """

    def __init__(
        self,
        path: str,
        line: LineSettings,
        backoff: Backoff,
        stop: threading.Event,
        read_timeout_s: float = 0.2,
    ) -> None:
        self.path = path
        self._line = line
        self._reopener = Reopener(path, backoff, stop)
        self._read_timeout_s = read_timeout_s
        self._serial: serial.Serial | None = None
        self.opens = 0
        self.reconnects = 0  # times it was lost after having been open
        self.last_error = ""

    @property
    def is_open(self) -> bool:
        return self._serial is not None

    def read(self, size: int = 1024) -> bytes:
        port = self._serial or self._open()
        if port is None:
            return b""
        try:
            data = port.read(max(1, min(size, port.in_waiting)))
        except OSError as exc:
            self.last_error = str(exc)
            self.reconnects += 1
            log.warning("serial port %s lost: %s", self.path, exc)
            self.close()
            self._reopener.failed()
            return b""
        if data:
            self._reopener.proven()
        return data

    def close(self) -> None:
        if self._serial is not None:
            # A vanished device may refuse even to be closed; the fd is released anyway.
            with contextlib.suppress(OSError):
                self._serial.close()
            self._serial = None

    def _open(self) -> serial.Serial | None:
        if not self._reopener.ready():
            return None
        try:
            self._serial = serial.Serial(
                self.path,
                baudrate=self._line.baudrate,
                bytesize=self._line.bytesize,
                parity=self._line.parity,
                stopbits=self._line.stopbits,
                timeout=self._read_timeout_s,
                exclusive=True,
            )
        except (OSError, ValueError) as exc:
            self.last_error = str(exc)
            log.warning("serial port %s cannot be opened: %s", self.path, exc)
            self._reopener.failed()
            return None
        self.opens += 1
        return self._serial
