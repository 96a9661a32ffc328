"""Login throttling: after too many failed logins, stop checking passwords for a while.

Why: reviewer passwords are the only thing between a network caller and the power to sign a
clinical report. After ``max_failures`` failed logins for one username, or from one client
address, within ``window_s`` seconds, further attempts for that username or from that address are
refused (HTTP 429) without looking at the password: no scrypt work is spent on them, and a guess
that happens to be right is not confirmed while the lock lasts. The window slides: the lock lifts
once the oldest of the counted failures is ``window_s`` old.

Two counters, because either alone is easy to get around: per username stops guessing one
reviewer's password from many addresses; per address stops one caller trying a password against
many usernames. A successful login clears its username's counter, not its address's, so a caller
holding one valid account cannot wipe its own record between guesses at others.

Counters live in memory, in one ``LoginThrottle`` per app instance: a restart forgets them, and a
deployment that runs several server processes behind a balancer would need a shared store (a
database table or Redis) to count across them. Behind a reverse proxy the client address is the
proxy's unless uvicorn trusts its ``X-Forwarded-For`` (it does for a proxy on 127.0.0.1 or ::1; others
must be listed in ``FORWARDED_ALLOW_IPS``).
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

MAX_FAILURES = 5
WINDOW_S = 15 * 60.0
MAX_KEYS = 100_000  # bounds the memory a flood of made-up usernames and addresses can take


@dataclass(frozen=True)
class Lockout:
    """Attempts are refused for ``retry_after_s`` more seconds."""

    retry_after_s: int

    @property
    def minutes(self) -> int:
        return max(1, math.ceil(self.retry_after_s / 60))

    def message(self) -> str:
        unit = "minute" if self.minutes == 1 else "minutes"
        return f"too many failed logins; try again in {self.minutes} {unit}"


@dataclass(frozen=True)
class Attempt:
    """One admitted login attempt, counted as a failure until it is reported as a success."""

    username: str
    address: str
    at: float


class LoginThrottle:
    """Failed-login counters per username and per client address (thread-safe; handlers run in threads).

    An admitted attempt is counted as a failure before the password is checked, so a burst of
    parallel guesses cannot all slip in before the first one is counted; a success takes it back.
    """

    def __init__(self, max_failures: int = MAX_FAILURES, window_s: float = WINDOW_S, *,
                 clock: Callable[[], float] = time.monotonic, max_keys: int = MAX_KEYS) -> None:
        if max_failures < 1 or window_s <= 0:
            raise ValueError("max_failures must be at least 1 and window_s positive")
        self.max_failures = max_failures
        self.window_s = window_s
        self.clock = clock
        self.max_keys = max_keys
        self._failures: dict[tuple[str, str], deque[float]] = {}
        self._lock = threading.Lock()

    def admit(self, username: str, address: str) -> Attempt | Lockout:
        """A Lockout when the username or the address is locked; otherwise the attempt, already counted."""
        keys = _keys(username, address)
        with self._lock:
            now = self.clock()
            lockout = self._lockout(keys, now)
            if lockout is not None:
                return lockout
            for key in keys:
                self._failures.setdefault(key, deque()).append(now)
            self._bound(now)
            return Attempt(keys[0][1], keys[1][1], now)

    def failed(self, attempt: Attempt) -> Lockout | None:
        """The attempt failed (it is already counted); a Lockout when this failure reached the limit."""
        with self._lock:
            return self._lockout(_keys(attempt.username, attempt.address), self.clock())

    def succeeded(self, attempt: Attempt) -> None:
        """Clear the username's failures and take back the attempt's provisional count on its address."""
        with self._lock:
            self._failures.pop(("user", attempt.username), None)
            stamps = self._failures.get(("addr", attempt.address))
            if stamps is not None and attempt.at in stamps:
                stamps.remove(attempt.at)

    def _lockout(self, keys: tuple[tuple[str, str], ...], now: float) -> Lockout | None:
        waits = [self._wait(key, now) for key in keys]
        longest = max(waits)
        return Lockout(max(1, math.ceil(longest))) if longest > 0 else None

    def _wait(self, key: tuple[str, str], now: float) -> float:
        """Seconds until ``key`` has fewer than ``max_failures`` failures in the window (0: not locked)."""
        stamps = self._failures.get(key)
        if not stamps:
            return 0.0
        while stamps and stamps[0] <= now - self.window_s:
            stamps.popleft()
        if len(stamps) < self.max_failures:
            return 0.0
        return stamps[-self.max_failures] + self.window_s - now

    def _bound(self, now: float) -> None:
        """Past ``max_keys`` counters, drop stale ones, then the oldest, so memory stays bounded."""
        if len(self._failures) <= self.max_keys:
            return
        for key in [k for k, v in self._failures.items() if not v or v[-1] <= now - self.window_s]:
            del self._failures[key]
        while len(self._failures) > self.max_keys:
            del self._failures[next(iter(self._failures))]


def _keys(username: str, address: str) -> tuple[tuple[str, str], tuple[str, str]]:
    # account names are at most 64 characters; longer input cannot name an account and is cut to bound memory
    return ("user", username[:64]), ("addr", address[:64])
