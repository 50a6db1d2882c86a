"""The operator CLIs' way into the running gateway: its own HTTP API, as the config file says.

`citygw thresholds …`, `citygw silences …` and the backtest's status commands change or read
live state, which only the running process holds; so they talk to its API rather than to
the store. Everything they need is in the gateway config they were given with ``-c``: the
API's address (``api.host``/``api.port``) and the bearer token (``api.token_file`` or
``$CITYGW_API_TOKEN``, via ``ApiSettings.token()``). A gateway bound to every interface
(``0.0.0.0``/``::``) is reached on loopback, where it also listens.

What the operator sees of a failure is one line: the HTTP status and the API's ``detail``
(a 422's field errors joined as ``field: problem``), or why the gateway could not be
reached. The token is never printed; proxies from the environment are ignored, so the
token cannot travel to a proxy named by ``$HTTP_PROXY``, and redirects are not followed.
Text from the server is shown with control characters escaped, so it cannot drive the
operator's terminal.
"""

from __future__ import annotations

import argparse
import json
import sys
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import httpx

from gateway.config import ApiSettings, ConfigError, load_config

DEFAULT_TIMEOUT_S = 10.0
MAX_TIMEOUT_S = 600.0
MAX_DETAIL_CHARS = 500
MAX_CELL_CHARS = 60
EVERY_INTERFACE = {"0.0.0.0", "::", ""}


class ApiError(Exception):
    """A request that did not succeed; ``str()`` is the one line for the operator."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def base_url(api: ApiSettings) -> str:
    """Where a client on this machine reaches the API that ``api`` configures."""
    host = "127.0.0.1" if api.host in EVERY_INTERFACE else api.host
    if ":" in host:  # an IPv6 literal
        host = f"[{host}]"
    return f"http://{host}:{api.port}"


class ApiClient:
    """Synchronous JSON requests to one gateway API with its bearer token."""

    def __init__(self, url: str, token: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self._http = httpx.Client(
            base_url=url,
            headers={"Authorization": f"Bearer {token}"},
            timeout=timeout_s,
            trust_env=False,
            follow_redirects=False,
        )

    @classmethod
    def from_config(cls, config_path: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> ApiClient:
        """The client for the gateway that ``config_path`` configures. ``ConfigError`` when
        the config is invalid, its API is off, or it has no token to send."""
        config = load_config(config_path)
        api = config.api
        if not api.enabled:
            raise ConfigError(f"{config_path}: api.enabled is false: this gateway serves no API")
        if api.port == 0:
            raise ConfigError(f"{config_path}: api.port is 0 (any free port): cannot reach it")
        token = api.token()
        if token is None:
            raise ConfigError(
                f"{config_path}: no API token: set api.token_file or ${api.token_env}"
            )
        return cls(base_url(api), token, timeout_s)

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def get(self, path: str, params: Mapping[str, Any] | None = None) -> Any:
        return self.request("GET", path, params=params)

    def post(self, path: str, body: Any = None) -> Any:
        return self.request("POST", path, body=body)

    def put(self, path: str, body: Any = None) -> Any:
        return self.request("PUT", path, body=body)

    def patch(self, path: str, body: Any = None) -> Any:
        return self.request("PATCH", path, body=body)

    def delete(self, path: str) -> Any:
        return self.request("DELETE", path)

    def request(
        self,
        method: str,
        path: str,
        params: Mapping[str, Any] | None = None,
        body: Any = None,
    ) -> Any:
        """The decoded JSON answer of a 2xx (None when it has no body); ``ApiError`` else."""
        where = f"{method} {path}"
        query = {k: v for k, v in (params or {}).items() if v is not None}
        try:
            response = self._http.request(method, path, params=query, json=body)
        except httpx.TimeoutException:
            raise ApiError(
                f"{where}: no answer from {self.url} within {self.timeout_s:g} s"
            ) from None
        except httpx.TransportError as exc:
            raise ApiError(
                f"{where}: cannot reach the gateway API at {self.url} ({_reason(exc)});"
                " is `citygw run` running with this config?"
            ) from None
        if not response.is_success:
            raise ApiError(
                f"{where}: HTTP {response.status_code}: " + _detail(response),
                response.status_code,
            )
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            raise ApiError(f"{where}: the answer is not JSON") from None


def _reason(exc: httpx.TransportError) -> str:
    cause = exc.__cause__ or exc.__context__
    text = str(cause or exc) or type(exc).__name__
    return printable(text)[:200]


def _detail(response: httpx.Response) -> str:
    """The API's ``detail`` as one line: FastAPI's 422 list becomes ``field: problem; …``."""
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):
        detail = None
    if detail is None:
        text = response.text.strip() or "(no detail)"
    elif isinstance(detail, list):
        text = "; ".join(_field_error(item) for item in detail)
    else:
        text = detail if isinstance(detail, str) else json.dumps(detail, ensure_ascii=False)
    text = printable(text)
    if len(text) > MAX_DETAIL_CHARS:
        text = text[:MAX_DETAIL_CHARS] + "…"
    return text


def _field_error(item: Any) -> str:
    if not isinstance(item, dict):
        return str(item)
    loc = [str(part) for part in item.get("loc", ()) if part not in ("body", "query", "path")]
    message = str(item.get("msg", "invalid"))
    return f"{'.'.join(loc)}: {message}" if loc else message


def printable(text: str) -> str:
    """``text`` with control and other non-printing characters escaped, Chinese kept."""
    return "".join(
        c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text
    )


# -- output -----------------------------------------------------------------------------------


def cell(value: Any) -> str:
    """One table cell: strings as they are, other values as compact JSON, bounded."""
    if value is None:
        text = ""
    elif isinstance(value, str):
        text = value
    else:
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    text = printable(text)
    return text if len(text) <= MAX_CELL_CHARS else text[: MAX_CELL_CHARS - 1] + "…"


def display_width(text: str) -> int:
    """Terminal columns: wide (CJK) characters take two."""
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def format_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    """``rows`` as aligned columns under a header; an empty list says so."""
    if not rows:
        return "(none)"
    cells = [[cell(row.get(column)) for column in columns] for row in rows]
    header = [column.upper() for column in columns]
    widths = [max(display_width(line[i]) for line in [header, *cells]) for i in range(len(columns))]

    def line(values: Sequence[str]) -> str:
        padded = (v + " " * (w - display_width(v)) for v, w in zip(values, widths, strict=True))
        return "  ".join(padded).rstrip()

    return "\n".join(line(values) for values in [header, *cells])


def show(
    data: Any,
    as_json: bool,
    rows: Sequence[Mapping[str, Any]] | None = None,
    columns: Sequence[str] = (),
) -> None:
    """Print ``data`` as JSON (``--json``, or when there is no table form), else ``rows``
    as a table of ``columns``."""
    if as_json or rows is None:
        print(json.dumps(data, ensure_ascii=False, indent=2))
    else:
        print(format_table(rows, columns))


# -- argparse ---------------------------------------------------------------------------------


def timeout_s(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 < value <= MAX_TIMEOUT_S:
        raise argparse.ArgumentTypeError(f"must be in (0, {MAX_TIMEOUT_S:g}] seconds")
    return value


def whole_number(low: int, high: int) -> Callable[[str], int]:
    """An argparse type: a whole number in ``[low, high]`` (a version, a page size, a cursor),
    refused before any request is made."""

    def parse(text: str) -> int:
        if not (text.isascii() and text.isdigit() and low <= int(text[:20]) <= high):
            raise argparse.ArgumentTypeError(f"expected a whole number {low} to {high}")
        return int(text)

    return parse


def add_api_arguments(parser: argparse.ArgumentParser) -> None:
    """``-c CONFIG`` (whose API to talk to), ``--json`` and ``--timeout``."""
    parser.add_argument("-c", "--config", required=True, help="the running gateway's config")
    parser.add_argument("--json", action="store_true", help="print the API's JSON answer")
    parser.add_argument(
        "--timeout", type=timeout_s, default=DEFAULT_TIMEOUT_S, help="seconds (default 10)"
    )


def run_with_client(args: argparse.Namespace, action: Callable[[ApiClient], None]) -> int:
    """Run ``action`` with the client that ``args`` (see ``add_api_arguments``) configure:
    0 when it succeeds; a one-line error on stderr and 1 when the API refuses or cannot be
    reached, 2 when the config is unusable."""
    try:
        client = ApiClient.from_config(args.config, args.timeout)
    except ConfigError as exc:
        print(f"citygw: {exc}", file=sys.stderr)
        return 2
    with client:
        try:
            action(client)
        except ApiError as exc:
            print(f"citygw: {exc}", file=sys.stderr)
            return 1
    return 0
