"""User-vector cache: Redis when a URL is set, else an in-process LRU; both with a TTL.

Keys carry the bundle version, the store's identity and the user's interaction generation, so a
vector cached before a new bundle, a new interaction or a wiped data dir (whose new store counts
interactions from 0 again) is never read again (it just expires). With Redis down the
cache answers "miss" and the service computes vectors itself; every failure is counted and the
first one logged; Redis is skipped for `retry_s`, then tried again. The `cliper_cache_up` gauge
is 0 from a failure until Redis answers again.
"""

import logging
import time
from abc import ABC, abstractmethod
from collections import OrderedDict

import numpy as np
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from service.metrics import Metrics

log = logging.getLogger(__name__)


def cache_key(bundle_version: str, store_id: str, user_id: str, generation: int) -> str:
    return f"cliper:{bundle_version}:{store_id}:user:{user_id}:{generation}"


class UserVectorCache(ABC):
    """get / set / delete float32 vectors by key; never raises on a backend failure."""

    kind: str

    @abstractmethod
    async def get(self, key: str) -> np.ndarray | None: ...

    @abstractmethod
    async def set(self, key: str, vector: np.ndarray) -> None: ...

    @abstractmethod
    async def delete(self, key: str) -> None: ...

    @abstractmethod
    async def problem(self) -> str | None:
        """None when the cache is usable, else why not (reported by the readiness check)."""

    async def close(self) -> None:
        return None


class LruCache(UserVectorCache):
    """In-process cache: least recently used entries go first, entries expire after `ttl_s`."""

    kind = "embedded"

    def __init__(self, max_entries: int, ttl_s: float) -> None:
        self._entries: OrderedDict[str, tuple[float, np.ndarray]] = OrderedDict()
        self._max_entries = max_entries
        self._ttl_s = ttl_s

    async def get(self, key: str) -> np.ndarray | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires, vector = entry
        if expires < time.monotonic():
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return vector

    async def set(self, key: str, vector: np.ndarray) -> None:
        self._entries[key] = (time.monotonic() + self._ttl_s, vector.copy())
        self._entries.move_to_end(key)
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)

    async def delete(self, key: str) -> None:
        self._entries.pop(key, None)

    async def problem(self) -> str | None:
        return None


class RedisCache(UserVectorCache):
    """Vectors as raw float32 bytes in Redis under `cache_key`, with `SET ... EX ttl`."""

    kind = "redis"

    def __init__(self, url: str, ttl_s: int, timeout_s: float, retry_s: float, metrics: Metrics) -> None:
        self._redis = Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s, retry=Retry(NoBackoff(), 0)
        )
        self._url = url
        self._ttl_s = ttl_s
        self._retry_s = retry_s
        self._metrics = metrics
        self._skip_until = 0.0
        self._down = False

    async def get(self, key: str) -> np.ndarray | None:
        data = await self._call("GET", key)
        return None if data is None else np.frombuffer(data, dtype=np.float32)

    async def set(self, key: str, vector: np.ndarray) -> None:
        await self._call("SET", key, np.asarray(vector, dtype=np.float32).tobytes(), "EX", self._ttl_s)

    async def delete(self, key: str) -> None:
        await self._call("DEL", key)

    async def problem(self) -> str | None:
        try:
            await self._redis.ping()
        except (RedisError, OSError) as exc:
            self._failed(exc)
            return f"Redis at {self._url} is unreachable: {exc}"
        self._recovered()
        return None

    async def close(self) -> None:
        await self._redis.aclose()

    async def _call(self, *command: object) -> bytes | None:
        if time.monotonic() < self._skip_until:
            return None
        try:
            result = await self._redis.execute_command(*command)
        except (RedisError, OSError) as exc:
            self._failed(exc)
            return None
        self._recovered()
        return result if isinstance(result, bytes) else None

    def _failed(self, exc: Exception) -> None:
        self._metrics.redis_errors.inc()
        self._skip_until = time.monotonic() + self._retry_s
        if not self._down:
            self._down = True
            self._metrics.cache_up.set(0)
            log.warning("Redis at %s failed (%s); serving without the cache, retrying every %.1fs",
                        self._url, exc, self._retry_s)

    def _recovered(self) -> None:
        if self._down:
            self._down = False
            self._metrics.cache_up.set(1)
            log.info("Redis at %s answers again; using the cache", self._url)


def make_cache(redis_url: str | None, ttl_s: int, max_entries: int, timeout_s: float, retry_s: float,
               metrics: Metrics) -> UserVectorCache:
    if redis_url:
        return RedisCache(redis_url, ttl_s, timeout_s, retry_s, metrics)
    return LruCache(max_entries, ttl_s)
