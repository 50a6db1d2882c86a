"""How ``citygw`` logs: text for a person at a terminal, or one JSON object per line for a
log collector (Loki, Elasticsearch, journald's JSON export).

The format is chosen by ``--log-format text|json`` or, where no flag can be added (a
container's environment), by ``$CITYGW_LOG_FORMAT``; the flag wins and the default is text.
It is chosen before the config is read on purpose: a config that fails to load must be
reported in the format the collector expects.

A JSON line holds ``ts`` (UTC, ISO 8601, milliseconds), ``level``, ``logger`` and
``message``, then ``device_id``, ``camera_id`` and ``incident_id`` when the call gave them
(``log.warning("...", extra={"incident_id": incident})``), and ``exc`` with the traceback.
A collector can then find every line about one device, camera or incident without parsing
messages. Messages carry outside text (topics, a platform's answers): each field is
bounded, and the line is ASCII JSON (``\\uXXXX`` escapes), so no byte of a message can break
it or the stream it goes to.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from datetime import UTC, datetime
from typing import Any, TextIO

FORMATS = ("text", "json")
FORMAT_ENV = "CITYGW_LOG_FORMAT"
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# The ids a log call may pass in ``extra=``, in the order a JSON line shows them.
ID_FIELDS = ("device_id", "camera_id", "incident_id")
MAX_MESSAGE_CHARS = 8192
MAX_ID_CHARS = 256
MAX_EXC_CHARS = 32_768
# Libraries that log one line per request or packet at INFO.
CHATTY_LOGGERS = ("httpx", "httpcore", "amqtt")


def log_format(text: str) -> str:
    """An argparse ``type``: applied to the flag and to the default taken from
    ``$CITYGW_LOG_FORMAT``, so a misspelt variable stops the start with a clear error."""
    if text not in FORMATS:
        raise argparse.ArgumentTypeError(
            f"log format must be one of {', '.join(FORMATS)} (flag or ${FORMAT_ENV}), got"
            f" {text[:32]!r}"
        )
    return text


def add_logging_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--log-format",
        type=log_format,
        default=os.environ.get(FORMAT_ENV) or "text",
        metavar="{text,json}",
        help=f"text (default) or json, one object per line (also ${FORMAT_ENV})",
    )


def configure(log_format: str, verbose: bool = False, stream: TextIO | None = None) -> None:
    """The root logger's one handler (on stderr unless ``stream``), in ``log_format``.
    Like ``logging.basicConfig``, it leaves a root logger that already has handlers alone."""
    handler = logging.StreamHandler(stream)
    formatter = JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT)
    handler.setFormatter(formatter)
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, handlers=[handler])
    for chatty in CHATTY_LOGGERS:
        logging.getLogger(chatty).setLevel(logging.WARNING)


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (see the module docstring)."""

    def format(self, record: logging.LogRecord) -> str:
        ts = datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
        entry: dict[str, Any] = {
            "ts": ts.replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": _clip(record.getMessage(), MAX_MESSAGE_CHARS),
        }
        for field in ID_FIELDS:
            value = getattr(record, field, None)
            if value is not None:
                entry[field] = _clip(str(value), MAX_ID_CHARS)
        if record.exc_info:
            entry["exc"] = _clip(self.formatException(record.exc_info), MAX_EXC_CHARS)
        if record.stack_info:
            entry["stack"] = _clip(self.formatStack(record.stack_info), MAX_EXC_CHARS)
        return json.dumps(entry)


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + f"... ({len(text) - limit} more)"
