"""A threaded HTTP server on a free loopback port, for the stand-in platforms of tests.

Each stand-in (``egova_intake.py``, ``open311_deviant.py``, ``scripted_platform.py``) brings
its own request handler; this holds the server, its thread and its URL.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class LoopbackServer:
    """Serves ``handler`` on 127.0.0.1 from a daemon thread; ``url`` ends in ``path``.

    ``port`` 0 takes a free one; a test that restarts a stand-in passes the port it had, so
    the client finds it where it was."""

    def __init__(
        self, handler: type[BaseHTTPRequestHandler], path: str = "", port: int = 0
    ) -> None:
        self._path = path
        self._server = ThreadingHTTPServer(("127.0.0.1", port), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}{self._path}"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
