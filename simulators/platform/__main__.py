"""``python -m simulators.platform --port 8081 --db cases.db --token-file F`` runs the platform.

The bearer token comes from a file (``--token-file``), the ``CITYGW_PLATFORM_TOKEN``
environment variable, or ``--token``; the first two keep it out of ``ps`` and
``docker inspect``.
"""

from __future__ import annotations

import argparse

from simulators.platform.server import serve
from simulators.platform.token_source import add_token_arguments, token_from


def main(argv: list[str] | None = None) -> None:
    """Parse the command line and serve until interrupted."""
    parser = argparse.ArgumentParser(
        prog="python -m simulators.platform", description="Bundled 数字城管 case platform."
    )
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default loopback)")
    parser.add_argument("--port", type=int, default=8081)
    parser.add_argument("--db", required=True, help="SQLite file; created if missing")
    add_token_arguments(parser)
    parser.add_argument(
        "--unavailable-for",
        type=float,
        default=0.0,
        metavar="S",
        help="answer /api/v1 with 503 for S seconds after start (fault injection)",
    )
    args = parser.parse_args(argv)
    serve(args.host, args.port, args.db, token_from(parser, args), args.unavailable_for)


if __name__ == "__main__":
    main()
