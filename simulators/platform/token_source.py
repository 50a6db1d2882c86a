"""Where the bundled platform's bearer token comes from: a file, the environment, or (for
tests and demos) the command line, which anyone on the host can read in ``ps``."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

TOKEN_ENV = "CITYGW_PLATFORM_TOKEN"


def add_token_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--token-file", type=Path, help="file holding the bearer token")
    source.add_argument("--token", help=f"bearer token (visible in ps; prefer ${TOKEN_ENV})")


def token_from(parser: argparse.ArgumentParser, args: argparse.Namespace) -> str:
    """The token, or exit with a usage error naming where it was looked for."""
    if args.token_file is not None:
        try:
            token = args.token_file.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            parser.error(f"--token-file {args.token_file}: cannot read: {exc}")
    else:
        token = args.token or os.environ.get(TOKEN_ENV, "")
    if not token:
        parser.error(f"no token: give --token-file, ${TOKEN_ENV} or --token")
    return token
