"""``citygw onvif discover``: the ONVIF cameras on this network segment, and the
``onvif://`` URL each one takes in the config (detectors/sources/onvif_discovery.py).

``--target`` probes one address instead of the multicast group, for segments whose
switches filter multicast; ``--interface`` picks the local address whose segment the
multicast probe goes out on. Exit code 0 when a camera answered, 1 when none did, 2 on
bad usage.
"""

from __future__ import annotations

import argparse
import sys

from detectors.sources.onvif_discovery import (
    MAX_TIMEOUT_S,
    MULTICAST_GROUP,
    WS_DISCOVERY_PORT,
    DiscoveryError,
    DiscoveryResult,
    discover,
    parse_target,
)


def register(subparsers: argparse._SubParsersAction) -> None:
    onvif = subparsers.add_parser("onvif", help="ONVIF cameras: find them on the network")
    actions = onvif.add_subparsers(required=True, metavar="ACTION")
    find = actions.add_parser("discover", help="WS-Discovery probe for ONVIF cameras")
    find.add_argument(
        "--timeout", type=_timeout_s, default=3.0, metavar="S",
        help=f"seconds to collect answers (0.05..{MAX_TIMEOUT_S:g}, default 3)",
    )  # fmt: skip
    find.add_argument(
        "--target", type=_target, default=MULTICAST_GROUP, metavar="ADDR[:PORT]",
        help=f"default: the multicast group {MULTICAST_GROUP}:{WS_DISCOVERY_PORT}",
    )  # fmt: skip
    find.add_argument(
        "--interface", default=None, metavar="ADDR",
        help="local IPv4 address whose segment the multicast probe goes to",
    )  # fmt: skip
    find.set_defaults(handler=_discover)


def _discover(args: argparse.Namespace) -> int:
    try:
        result = discover(args.target, args.timeout, args.interface)
    except DiscoveryError as err:
        print(f"citygw onvif discover: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # no route for multicast, no such local address
        print(f"citygw onvif discover: cannot probe {args.target}: {err}", file=sys.stderr)
        return 1
    print(render(result), end="")
    return 0 if result.cameras else 1


def render(result: DiscoveryResult) -> str:
    """What the operator reads: one block per camera, then what was refused."""
    host, port = result.target
    lines = [f"{len(result.cameras)} ONVIF camera(s) answered {host}:{port} "
             f"within {result.timeout_s:g} s"]  # fmt: skip
    for camera in result.cameras:
        url = camera.onvif_url()
        lines += [
            "",
            f"  address   {camera.replied_from}",
            f"  name      {camera.name or '-'}",
            f"  hardware  {camera.hardware or '-'}",
            f"  location  {camera.location or '-'}",
            f"  endpoint  {camera.endpoint}",
            f"  xaddrs    {' '.join(camera.xaddrs) or '-'}",
            f"  config    url: {url}" if url else "  config    - (no http XAddr)",
        ]
    if result.rejected:
        refused = ", ".join(f"{reason} {n}" for reason, n in sorted(result.rejected.items()))
        lines += ["", f"replies refused: {refused}"]
    if result.cameras:
        lines += ["", "Put the camera's user and password in place of USER:PASSWORD; add "
                  "/N for its media profile N (default 0)."]  # fmt: skip
    return "\n".join(lines) + "\n"


def _timeout_s(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0.05 <= value <= MAX_TIMEOUT_S:
        raise argparse.ArgumentTypeError(f"{text} s is not in 0.05..{MAX_TIMEOUT_S:g}")
    return value


def _target(text: str) -> str:
    try:
        parse_target(text)
    except DiscoveryError as err:
        raise argparse.ArgumentTypeError(str(err).removeprefix("target: ")) from None
    return text
