"""Failed-login throttling: token buckets per client address and per username.

In-process (each server process keeps its own buckets). Only failures take a
token; a success costs nothing.

- Per address: ``[access] login_burst`` failures, then one more every
  ``login_refill_seconds``. An address whose bucket is empty is refused with
  429 and Retry-After before its password is even checked.
- Per username: after ``login_user_burst`` failures each further check for that
  name waits ``login_user_delay`` seconds first. It only delays, so an attacker
  guessing from many addresses slows guessing down to one try per delay per
  server thread but never locks the real user out: the right password still works.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict

#: Buckets kept at most (oldest forgotten first), so that many addresses cannot fill memory.
MAX_BUCKETS = 10000


class Buckets:
    def __init__(self, burst: int, refill_seconds: float) -> None:
        self.burst = burst
        self.refill = refill_seconds
        self._tokens: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()

    def _level(self, key: str, now: float) -> float:
        tokens, at = self._tokens.get(key, (float(self.burst), now))
        if self.refill > 0:
            tokens = min(float(self.burst), tokens + (now - at) / self.refill)
        else:
            tokens = float(self.burst)
        return tokens

    def wait(self, key: str) -> float:
        """Seconds until ``key`` has a token again (0: it has one now)."""
        with self._lock:
            tokens = self._level(key, time.monotonic())
        return 0.0 if tokens >= 1 else (1 - tokens) * self.refill

    def take(self, key: str) -> None:
        """Spend one token of ``key`` (a failure)."""
        now = time.monotonic()
        with self._lock:
            tokens = self._level(key, now)
            self._tokens[key] = (max(tokens - 1, 0.0), now)
            self._tokens.move_to_end(key)
            while len(self._tokens) > MAX_BUCKETS:
                self._tokens.popitem(last=False)


class LoginThrottle:
    def __init__(
        self, burst: int = 10, refill_seconds: float = 6.0, user_burst: int = 5, user_delay: float = 1.0
    ) -> None:
        self.addresses = Buckets(burst, refill_seconds)
        # A user's bucket refills one failure per delay period.
        self.users = Buckets(user_burst, max(user_delay, 0.001) * 10)
        self.user_delay = user_delay

    def retry_after(self, address: str) -> float:
        """Seconds the address must wait before trying again (0: it may try now)."""
        return self.addresses.wait(address)

    def before_check(self, username: str) -> None:
        """Delay a check for a username that failed too often lately."""
        if self.user_delay and self.users.wait(username) > 0:
            time.sleep(self.user_delay)

    def failed(self, address: str, username: str) -> None:
        self.addresses.take(address)
        self.users.take(username)
