"""Who a silence or threshold change is recorded under: the signed-in person, not a name the
client types.

A session and a client token are named principals (gateway/principals.py): the change is
theirs, and it is recorded under their name whatever ``author`` the request carries. A
different ``author`` is ignored rather than refused: the console and scripts written for
the machine token's contract keep working unchanged, the answer (the silence, the version)
shows the name that was recorded, and nothing a client sends can put another person's name
in the trail. ``author`` may then be left out.

The machine bearer token (``api-token``) stands for no person, so a request made with it
still says who acts (``citygw thresholds set --author 李工``), as does a router served
without the guard (tests): ``author`` is required there, and its absence is the same 422
naming the field as before.
"""

from __future__ import annotations

from fastapi import Request
from fastapi.exceptions import RequestValidationError

NAMED_KINDS = frozenset({"session", "client_token"})


def recorded_author(request: Request, given: str | None, loc: tuple[str, ...]) -> str:
    """The author to record for this request; ``given`` is the request's own ``author``
    (already validated by its model), ``loc`` where it is (``("body", "author")``)."""
    principal = getattr(request.state, "principal", None)
    if principal is not None and principal.kind in NAMED_KINDS:
        return principal.name
    if given is None:
        raise RequestValidationError(
            [{"type": "missing", "loc": loc, "input": None,
              "msg": "Field required: the machine token names no person, say who acts"}]
        )  # fmt: skip
    return given
