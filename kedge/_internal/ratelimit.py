"""Token buckets (pure: the caller passes ``now`` in seconds)."""

from __future__ import annotations

from collections import OrderedDict


class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` saved up."""

    __slots__ = ("rate", "burst", "_tokens", "_stamp")

    def __init__(self, rate: float, burst: int, *, now: float) -> None:
        if rate <= 0 or burst <= 0:
            raise ValueError("rate and burst must be positive")
        self.rate = float(rate)
        self.burst = float(burst)
        self._tokens = float(burst)
        self._stamp = now

    def _refill(self, now: float) -> None:
        if now > self._stamp:
            self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now

    def take(self, now: float, n: float = 1.0) -> bool:
        """Take ``n`` tokens if available; return whether it was allowed."""
        self._refill(now)
        if self._tokens >= n:
            self._tokens -= n
            return True
        return False

    def wait_time(self, now: float, n: float = 1.0) -> float:
        """Seconds until ``n`` tokens are available (0 if they are now)."""
        self._refill(now)
        missing = n - self._tokens
        return 0.0 if missing <= 0 else missing / self.rate


class KeyedLimiter:
    """One bucket per key (e.g. source address), bounded in the number of keys kept."""

    def __init__(self, rate: float, burst: int, *, max_keys: int = 10_000) -> None:
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def _bucket(self, key: str, now: float) -> TokenBucket:
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = TokenBucket(self.rate, self.burst, now=now)
            self._buckets[key] = bucket
            while len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
        return bucket

    def allowed(self, key: str, now: float) -> bool:
        """Whether ``key`` still has budget (does not consume)."""
        return self._bucket(key, now).wait_time(now) == 0.0

    def charge(self, key: str, now: float) -> bool:
        """Consume one token for ``key``; False when it had none left."""
        return self._bucket(key, now).take(now)
