"""The bundled case platform: a small 数字城管 workflow API (FastAPI + SQLite).

It stands in for the city's real case system so the gateway's case bridge can be tested
end to end: bearer auth, idempotent create and evidence, the 受理→立案→派遣→处置→核查→结案
workflow, escalation, durable state, paged listings, bounds on everything a client sends,
and an injectable outage.

Modules: ``workflow`` (statuses and rules), ``schemas`` (request validation and its bounds),
``store`` (SQLite), ``guards`` (fault injection, auth, body limit), ``api`` (routes),
``server`` (uvicorn).
"""

from simulators.platform.api import create_app
from simulators.platform.server import serve

__all__ = ["create_app", "serve"]
