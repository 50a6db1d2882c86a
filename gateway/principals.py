"""Who is asking: the principal behind a request to the API, and what its role allows.

Three roles, each allowing what the one below it does and more:

- **viewer** reads everything (GET/HEAD under ``/api/v1`` and ``/metrics``);
- **operator** also writes operations state (silences, thresholds, backtests, requeue);
- **admin** also manages users and client tokens.

A principal comes from one of the API guard's credentials (gateway/api_guard.py): the
configured machine token (kind ``api_token``, named ``api-token``, admin), a client token
(``client_token``, named as it was created), or a browser session (``session``, named after
its user). ``cli`` is the kind of writes made by ``citygw users`` on the store directly.
The guard puts the principal in ``request.state.principal``; handlers read it from there.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal, get_args

Role = Literal["viewer", "operator", "admin"]
Kind = Literal["session", "client_token", "api_token", "cli"]
ROLES: tuple[Role, ...] = get_args(Role)  # lowest first

# Users' and client tokens' names: what an operator types and reads in the audit log, so
# short, printable and free of spaces.
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
MAX_NAME_CHARS = 64


@dataclass(frozen=True, slots=True)
class Principal:
    name: str
    role: Role
    kind: Kind

    def may(self, required: Role) -> bool:
        """Whether this principal's role is ``required`` or above it."""
        return ROLES.index(self.role) >= ROLES.index(required)


API_TOKEN = Principal("api-token", "admin", "api_token")
