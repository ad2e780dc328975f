"""Rate limits of the HTTP API: token buckets per client address and per API token.

A bucket holds up to ``burst`` units and refills at ``rate`` units per second. In an address's
bucket a request takes 1 unit, or :attr:`RateLimits.heavy_cost` for work that generates,
verifies or publishes; in a token's bucket every request takes 1. An empty bucket answers with
the seconds until the request would fit, which the API sends as ``429`` with ``Retry-After``.

The limits are read from ``<home>/api.json`` (``{"per_address_rate": 50, …}``; every field is
optional, unknown fields are refused) when the node starts. The number of buckets is bounded:
past :data:`MAX_BUCKETS` the least recently used one is forgotten (it comes back full, which
only ever lets a forgotten client through sooner, never refuses anyone wrongly).
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from pathlib import Path

import msgspec
from dre.protocol.errors import DreError
from dre.storage.fsutil import read_json_file

__all__ = ["API_SETTINGS_FILE", "MAX_BUCKETS", "RateLimiter", "RateLimits", "load_rate_limits"]

API_SETTINGS_FILE = "api.json"
MAX_BUCKETS = 10_000
_MAX_SETTINGS_BYTES = 16 * 1024


class RateLimits(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Token-bucket settings. Rates are units per second; a zero rate turns that limit off."""

    #: Every request from one client address (reads included).
    per_address_rate: float = 200.0
    per_address_burst: float = 2000.0
    #: Requests made with one API token (writes).
    per_token_rate: float = 20.0
    per_token_burst: float = 200.0
    #: Units a heavy request (publish, verify, regenerate, generate…) takes from its address.
    heavy_cost: float = 5.0


def load_rate_limits(home: Path) -> RateLimits:
    """The limits in ``<home>/api.json``, or the defaults if there is none."""
    limits = read_json_file(home / API_SETTINGS_FILE, RateLimits, max_bytes=_MAX_SETTINGS_BYTES,
                            default=RateLimits())
    for field in RateLimits.__struct_fields__:
        value = getattr(limits, field)
        if not math.isfinite(value) or value < 0:
            raise DreError(f"{home / API_SETTINGS_FILE}: {field} must be a number >= 0")
    return limits


class _Bucket:
    __slots__ = ("level", "stamp")

    def __init__(self, level: float, stamp: float) -> None:
        self.level = level
        self.stamp = stamp


class RateLimiter:
    """Buckets by key (an address, a token id), one rate and burst for all of them.

    Thread-safe: handlers run on the event loop, but tests and tools may share one limiter.
    """

    def __init__(self, rate: float, burst: float, *, max_buckets: int = MAX_BUCKETS) -> None:
        self.rate = rate
        self.burst = burst
        self.max_buckets = max_buckets
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        """False when the rate is 0 (no limit)."""
        return self.rate > 0

    def take(self, key: str, now: float, cost: float = 1.0) -> float:
        """Take ``cost`` units from ``key``'s bucket: 0.0 if allowed, else the seconds to wait
        (nothing is taken then)."""
        if not self.enabled:
            return 0.0
        cost = min(cost, self.burst)  # a request larger than the bucket could never pass
        with self._lock:
            bucket = self._buckets.get(key)
            if bucket is None:
                bucket = _Bucket(self.burst, now)
                self._buckets[key] = bucket
                if len(self._buckets) > self.max_buckets:
                    self._buckets.popitem(last=False)
            else:
                self._buckets.move_to_end(key)
                elapsed = max(0.0, now - bucket.stamp)
                bucket.level = min(self.burst, bucket.level + elapsed * self.rate)
                bucket.stamp = now
            if bucket.level >= cost:
                bucket.level -= cost
                return 0.0
            return (cost - bucket.level) / self.rate

    def __len__(self) -> int:
        return len(self._buckets)
