"""Run the platform under uvicorn; the one place that knows about the ASGI server."""

from __future__ import annotations

import uvicorn

from simulators.platform.api import create_app


def serve(host: str, port: int, db_path: str, token: str, unavailable_for: float = 0.0) -> None:
    """Serve the platform until interrupted (blocking); logs only warnings and errors."""
    app = create_app(db_path, token, unavailable_for)
    uvicorn.run(app, host=host, port=port, log_level="warning")
