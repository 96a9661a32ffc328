"""Login throttling: after too many failed logins, stop checking passwords for a while.

Why: reviewer passwords are the only thing between a network caller and the power to sign a
clinical report. Refused attempts get HTTP 429 without the password being looked at: no scrypt work
is spent on them, and a guess that happens to be right is not confirmed while the lock lasts. Each
window slides: a lock lifts once the oldest of the failures it counts is ``window_s`` old.

Three counters, each closing a gap the others leave, and none letting a stranger lock a reviewer out:

- **name from one address** (``max_failures``, 5): guessing one reviewer's password from one place.
- **address** (``max_address_failures``, 20, across names): one caller trying a password against many
  names. Higher than the first, so colleagues behind one NAT address do not lock each other out.
- **name from new addresses** (``max_name_failures``, 20, across addresses): guessing one reviewer's
  password from many places. It counts and locks only addresses the name has not logged in from:
  an address where the reviewer logged in successfully (remembered ``remember_s``, 30 days) is
  exempt, so a distributed attack cannot lock the reviewer out of their usual machine.

A successful login clears its name-from-this-address counter and takes back its own provisional
counts; it does not clear the other counters, so a caller holding one valid account cannot wipe its
record between guesses at others, and a reviewer's login does not hand an attacker fresh guesses.

Counters live in memory, in one ``LoginThrottle`` per app instance: a restart forgets them (and the
remembered addresses), and a deployment that runs several server processes behind a balancer would
need a shared store (a database table or Redis) to count across them. Behind a reverse proxy the
client address is the proxy's unless uvicorn trusts its ``X-Forwarded-For`` (it does for a proxy on
127.0.0.1 or ::1; others must be listed in ``FORWARDED_ALLOW_IPS``).
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

MAX_FAILURES = 5
MAX_ADDRESS_FAILURES = 20
MAX_NAME_FAILURES = 20
WINDOW_S = 15 * 60.0
REMEMBER_S = 30 * 24 * 3600.0
MAX_KEYS = 100_000  # bounds the memory a flood of made-up usernames and addresses can take
MAX_KNOWN_PER_NAME = 32  # remembered addresses per reviewer (the oldest is forgotten first)

# counter kinds, named for the logs
PAIR, ADDRESS, NAME = "name from this address", "address", "name from new addresses"

Key = tuple[str, ...]


@dataclass(frozen=True)
class Lockout:
    """Attempts are refused for ``retry_after_s`` more seconds; ``counter`` says which limit was reached."""

    retry_after_s: int
    counter: str = PAIR

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
    keys: tuple[Key, ...]  # the counters it was counted in


class LoginThrottle:
    """Failed-login counters (thread-safe; handlers run in threads).

    An admitted attempt is counted as a failure before the password is checked, so a burst of
    parallel guesses cannot all slip in before the first one is counted; a success takes it back.
    """

    def __init__(self, max_failures: int = MAX_FAILURES, window_s: float = WINDOW_S, *,
                 max_address_failures: int = MAX_ADDRESS_FAILURES, max_name_failures: int = MAX_NAME_FAILURES,
                 remember_s: float = REMEMBER_S, clock: Callable[[], float] = time.monotonic,
                 max_keys: int = MAX_KEYS) -> None:
        if min(max_failures, max_address_failures, max_name_failures) < 1 or window_s <= 0 or remember_s <= 0:
            raise ValueError("the failure limits must be at least 1, window_s and remember_s positive")
        self.max_failures = max_failures
        self.window_s = window_s
        self.remember_s = remember_s
        self.limits = {PAIR: max_failures, ADDRESS: max_address_failures, NAME: max_name_failures}
        self.clock = clock
        self.max_keys = max_keys
        self._failures: dict[Key, deque[float]] = {}
        self._known: dict[str, dict[str, float]] = {}  # name -> address -> time of its last successful login
        self._lock = threading.Lock()

    def admit(self, username: str, address: str) -> Attempt | Lockout:
        """A Lockout when any counter for this name and address is at its limit; otherwise the attempt, already counted."""
        name, address = username[:64], address[:64]  # longer input cannot name an account: cut to bound memory
        with self._lock:
            now = self.clock()
            keys = self._keys(name, address, now)
            lockout = self._lockout(keys, now)
            if lockout is not None:
                return lockout
            for key in keys:
                self._failures.setdefault(key, deque()).append(now)
            self._bound(now)
            return Attempt(name, address, now, keys)

    def failed(self, attempt: Attempt) -> Lockout | None:
        """The attempt failed (it is already counted); a Lockout when this failure reached a limit."""
        with self._lock:
            return self._lockout(attempt.keys, self.clock())

    def succeeded(self, attempt: Attempt) -> None:
        """Clear the name-from-this-address counter, take back the attempt's other counts, remember the address."""
        with self._lock:
            for key in attempt.keys:
                if key[0] == PAIR:
                    self._failures.pop(key, None)
                elif (stamps := self._failures.get(key)) is not None and attempt.at in stamps:
                    stamps.remove(attempt.at)
            known = self._known.setdefault(attempt.username, {})
            known.pop(attempt.address, None)
            known[attempt.address] = self.clock()
            while len(known) > MAX_KNOWN_PER_NAME:
                del known[next(iter(known))]

    def _keys(self, name: str, address: str, now: float) -> tuple[Key, ...]:
        keys: tuple[Key, ...] = ((PAIR, name, address), (ADDRESS, address))
        seen = self._known.get(name, {}).get(address)
        if seen is None or seen <= now - self.remember_s:  # a new address for this name
            keys += ((NAME, name),)
        return keys

    def _lockout(self, keys: tuple[Key, ...], now: float) -> Lockout | None:
        wait, counter = max((self._wait(key, now), key[0]) for key in keys)
        return Lockout(max(1, math.ceil(wait)), counter) if wait > 0 else None

    def _wait(self, key: Key, now: float) -> float:
        """Seconds until ``key`` has fewer failures in the window than its limit (0: not locked)."""
        stamps = self._failures.get(key)
        if not stamps:
            return 0.0
        while stamps and stamps[0] <= now - self.window_s:
            stamps.popleft()
        limit = self.limits[key[0]]
        if len(stamps) < limit:
            return 0.0
        return stamps[-limit] + self.window_s - now

    def _bound(self, now: float) -> None:
        """Past ``max_keys`` counters, drop stale ones, then the oldest, so memory stays bounded."""
        if len(self._failures) <= self.max_keys:
            return
        for key in [k for k, v in self._failures.items() if not v or v[-1] <= now - self.window_s]:
            del self._failures[key]
        while len(self._failures) > self.max_keys:
            del self._failures[next(iter(self._failures))]
