"""How many wrong passwords a name and an address may try: the brake on guessing.

Failed sign-ins are counted per user name and per client address over a sliding window;
past ``PER_USER`` failures for one name, or ``PER_ADDRESS`` from one address, sign-ins for
it are refused (429) without checking the password until the window has moved on, so a
guess that happens to be right is not told apart. A success clears its name's failures
(not its address's). Both tables hold at most ``MAX_KEYS`` keys (the least recently failed
go first), so a flood of made-up names cannot grow them.

In memory: a restart forgets the counts, which costs a guesser a restart per window.
Behind a reverse proxy every client shares the proxy's address, so the per-address limit
then brakes everyone together; the per-name limit still holds.
"""

from __future__ import annotations

from collections import Counter, OrderedDict, deque

PER_USER = 5
PER_ADDRESS = 20
WINDOW_MS = 15 * 60 * 1000
MAX_KEYS = 10_000


class _Failures:
    def __init__(self, allowed: int) -> None:
        self.allowed = allowed
        self.times: OrderedDict[str, deque[int]] = OrderedDict()

    def retry_after_ms(self, key: str, now_ms: int) -> int | None:
        times = self.times.get(key)
        if times is None:
            return None
        while times and times[0] <= now_ms - WINDOW_MS:
            times.popleft()
        if len(times) < self.allowed:
            return None
        return times[0] + WINDOW_MS - now_ms

    def add(self, key: str, now_ms: int) -> None:
        times = self.times.pop(key, None) or deque(maxlen=self.allowed)
        times.append(now_ms)
        self.times[key] = times
        while len(self.times) > MAX_KEYS:
            self.times.popitem(last=False)


class SignInLimits:
    def __init__(self) -> None:
        self._users = _Failures(PER_USER)
        self._addresses = _Failures(PER_ADDRESS)
        self.counts: Counter[str] = Counter()  # ok, wrong_credentials, rate_limited

    def retry_after_s(self, name: str, address: str, now_ms: int) -> int | None:
        """Seconds until a sign-in for ``name`` from ``address`` may be tried (counted as
        ``rate_limited``), or None."""
        waits = [
            wait
            for wait in (
                self._users.retry_after_ms(name, now_ms),
                self._addresses.retry_after_ms(address, now_ms),
            )
            if wait is not None
        ]
        if not waits:
            return None
        self.counts["rate_limited"] += 1
        return -(-max(waits) // 1000)

    def failed(self, name: str, address: str, now_ms: int) -> None:
        self.counts["wrong_credentials"] += 1
        self._users.add(name, now_ms)
        self._addresses.add(address, now_ms)

    def succeeded(self, name: str) -> None:
        self.counts["ok"] += 1
        self._users.times.pop(name, None)
