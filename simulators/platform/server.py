"""Run the platform under uvicorn; the one place that knows about the ASGI server."""

from __future__ import annotations

import uvicorn

from simulators.platform.api import create_app
from simulators.platform.webhooks import target_from_environment


def serve(host: str, port: int, db_path: str, token: str, unavailable_for: float = 0.0) -> None:
    """Serve the platform until interrupted (blocking); logs only warnings and errors.

    Status webhooks go where ``$CITYGW_PLATFORM_WEBHOOK_URL`` says (see
    ``simulators/platform/webhooks.py``); a webhook setting that cannot be used stops the
    start with a message naming the variable.
    """
    try:
        webhook = target_from_environment()
    except ValueError as exc:
        raise SystemExit(f"platform: {exc}") from None
    app = create_app(db_path, token, unavailable_for, webhook=webhook)
    uvicorn.run(app, host=host, port=port, log_level="warning")
