"""A virtual null-modem cable: two pseudo-terminals whose far ends are wired together.

The gateway opens ``<dir>/gateway`` and the simulated devices open ``<dir>/devices``; both
are symlinks to pty slaves, like the stable ``/dev/serial/by-id/...`` links udev makes. A
thread relays bytes between the two pty masters. Pure Python (no socat), so tests and
``citygw simulate serial`` run anywhere with ptys.

``unplug()`` is what pulling the gateway's USB adapter looks like to the gateway: the link
disappears and the open port fails (read: "ready to read but returned no data", ioctl and
write: EIO). ``replug()`` makes a fresh pty and points the link at it. Bytes the devices
send while unplugged are lost, as on a real cable. Both slaves are put in raw mode (and
kept open here, so the tty keeps its settings between opens): no echo, no CR/LF rewriting.
"""

from __future__ import annotations

import errno
import fcntl
import os
import pty
import select
import threading
import tty
from pathlib import Path


class _Pty:
    """One pty pair behind a symlink."""

    def __init__(self, link: Path) -> None:
        self.master, self._slave = pty.openpty()
        tty.setraw(self._slave)
        flags = fcntl.fcntl(self.master, fcntl.F_GETFL)
        fcntl.fcntl(self.master, fcntl.F_SETFL, flags | os.O_NONBLOCK)
        self.link = link
        tmp = link.with_name(f".{link.name}.tmp")
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(os.ttyname(self._slave))
        tmp.replace(link)  # atomic: a reader never sees the link half made

    def close(self) -> None:
        self.link.unlink(missing_ok=True)
        os.close(self.master)
        os.close(self._slave)


class NullModem:
    """Two linked ptys with stable paths ``gateway_path`` and ``devices_path``."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.gateway_path = str(self.directory / "gateway")
        self.devices_path = str(self.directory / "devices")
        self._lock = threading.Lock()
        self._gateway: _Pty | None = _Pty(Path(self.gateway_path))
        self._devices = _Pty(Path(self.devices_path))
        self._wake_r, self._wake_w = os.pipe()
        self._closed = False
        self.dropped_bytes = 0  # sent while unplugged, or more than the far side buffers
        self._thread = threading.Thread(target=self._relay, name=f"null-modem {directory}")
        self._thread.start()

    def __enter__(self) -> NullModem:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def unplug(self) -> None:
        with self._lock:
            if self._gateway is not None:
                self._gateway.close()
                self._gateway = None
        os.write(self._wake_w, b"x")

    def replug(self) -> None:
        with self._lock:
            if self._gateway is None:
                self._gateway = _Pty(Path(self.gateway_path))
        os.write(self._wake_w, b"x")

    def close(self) -> None:
        self._closed = True
        os.write(self._wake_w, b"x")
        self._thread.join()
        self.unplug()
        self._devices.close()
        os.close(self._wake_r)
        os.close(self._wake_w)

    def _relay(self) -> None:
        while not self._closed:
            with self._lock:
                gateway = self._gateway.master if self._gateway else None
            devices = self._devices.master
            fds = [self._wake_r, devices] + ([gateway] if gateway is not None else [])
            try:
                readable, _, _ = select.select(fds, [], [])
            except OSError:  # EBADF: unplugged between reading the fds and selecting
                continue
            if self._wake_r in readable:
                os.read(self._wake_r, 64)
                continue  # the wiring changed: select again on the current fds
            with self._lock:  # unplug() may have closed the gateway's fd meanwhile
                gateway = self._gateway.master if self._gateway else None
                if devices in readable:
                    self._pass(devices, gateway)
                if gateway is not None and gateway in readable:
                    self._pass(gateway, devices)

    def _pass(self, source: int, target: int | None) -> None:
        try:
            data = os.read(source, 4096)
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.EIO):  # EIO: no one has the slave open
                return
            raise
        if target is None:
            self.dropped_bytes += len(data)
            return
        try:
            sent = os.write(target, data)
        except BlockingIOError:
            sent = 0
        self.dropped_bytes += len(data) - sent  # like a UART overrun: the rest is lost
