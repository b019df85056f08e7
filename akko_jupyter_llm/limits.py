"""The per-user limit on requests that are in flight through the proxy at once."""

from __future__ import annotations

from collections import defaultdict

from .config import setting_name
from .errors import ProxyError

# Seconds a client should wait (``Retry-After``) when over the limit.
RETRY_AFTER_SECONDS = 2


class ConcurrencyLimiter:
    """Counts in-flight requests per user and rejects those over the limit.

    A limit of 0 means no limit. The counts live in this server's memory, which
    is enough because each user has their own Jupyter server.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._in_flight: defaultdict[str, int] = defaultdict(int)

    def in_flight(self, user: str) -> int:
        return self._in_flight.get(user, 0)

    def acquire(self, user: str) -> None:
        """Count one more request for ``user``, or raise a 429 `ProxyError`."""
        if self.limit and self._in_flight[user] >= self.limit:
            raise ProxyError(
                429,
                f"Too many requests at once: {user} already has {self.limit} "
                "requests to the model gateway in progress, the limit set by "
                f"{setting_name('max_concurrent_requests')}. Wait for one to "
                f"finish and retry after {RETRY_AFTER_SECONDS} s.",
                code="too_many_concurrent_requests",
                headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
            )
        self._in_flight[user] += 1

    def release(self, user: str) -> None:
        count = self._in_flight.get(user, 0) - 1
        if count > 0:
            self._in_flight[user] = count
        else:
            self._in_flight.pop(user, None)
