"""Per-sandbox limits: open connections (requests and WebSockets) and request rate.

Both answer 429 when exceeded. State is kept only for sandboxes with traffic and dropped when a
sandbox leaves the cache, so memory follows the active set, not the history. It is per worker
process: with ``--workers N`` the kernel spreads a sandbox's connections over N processes that each
count alone, so a sandbox may hold up to N times each limit (docs/gateway.md says why).
"""
import time


class TokenBucket:
    __slots__ = ("tokens", "stamp")

    def __init__(self, burst: float, now: float):
        self.tokens = burst
        self.stamp = now


class SandboxLimits:
    def __init__(self, max_concurrent: int = 0, rate: float = 0.0, burst: int = 1, clock=time.monotonic):
        self.max_concurrent = max_concurrent
        self.rate = rate
        self.burst = float(max(burst, 1))
        self._clock = clock
        self._open = {}
        self._buckets = {}

    def allow_rate(self, sandbox_id: str) -> bool:
        """Take one request from the sandbox's bucket; False when it is empty."""
        if self.rate <= 0:
            return True
        now = self._clock()
        bucket = self._buckets.get(sandbox_id)
        if bucket is None:
            bucket = self._buckets[sandbox_id] = TokenBucket(self.burst, now)
        else:
            bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.stamp) * self.rate)
            bucket.stamp = now
        if bucket.tokens < 1:
            return False
        bucket.tokens -= 1
        return True

    def acquire(self, sandbox_id: str) -> bool:
        """Count one more open connection; False (nothing counted) when at the limit."""
        count = self._open.get(sandbox_id, 0)
        if self.max_concurrent and count >= self.max_concurrent:
            return False
        self._open[sandbox_id] = count + 1
        return True

    def release(self, sandbox_id: str):
        count = self._open.get(sandbox_id, 0) - 1
        if count > 0:
            self._open[sandbox_id] = count
        else:
            self._open.pop(sandbox_id, None)

    def open_connections(self, sandbox_id: str) -> int:
        return self._open.get(sandbox_id, 0)

    def forget(self, sandbox_id: str):
        """The sandbox is gone: drop its rate state (open counts drain as their requests end)."""
        self._buckets.pop(sandbox_id, None)
