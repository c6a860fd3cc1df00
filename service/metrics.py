"""Prometheus metrics of one app instance (own registry, so tests can run several apps).

With several worker processes (`PROMETHEUS_MULTIPROC_DIR` set, as `python -m service --workers N`
does), every process writes its values to files there and `exposition_registry` adds them up,
so a scrape of any worker sees the whole service.
"""

import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.context_managers import Timer
from prometheus_client.multiprocess import MultiProcessCollector

# decode: image bytes -> pixels; prepare: preprocessing, prompts, chunking; encode: image and text
# encoders; tower: item tower; search: FAISS; cache: user-vector cache calls; store: SQLite writes.
STAGES = ("decode", "prepare", "encode", "tower", "search", "cache", "store")
_LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


class Metrics:
    """Per-stage latency, cache hits and misses, Redis errors and cache state, encoder and store
    batch sizes, index size."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.stage_seconds = Histogram(
            "cliper_stage_seconds", "Latency of one stage of a request", ["stage"],
            buckets=_LATENCY_BUCKETS, registry=self.registry,
        )
        self.cache_requests = Counter(
            "cliper_cache_requests", "User-vector cache look-ups", ["result"], registry=self.registry
        )
        self.redis_errors = Counter("cliper_redis_errors", "Failed Redis calls", registry=self.registry)
        # livemin: with several workers, 0 as soon as any live one serves without its cache
        self.cache_up = Gauge(
            "cliper_cache_up", "1 while the user-vector cache answers; 0 while requests are served without it",
            registry=self.registry, multiprocess_mode="livemin",
        )
        self.batch_size = Histogram(
            "cliper_encode_batch_size", "Items per encoder micro-batch",
            buckets=_BATCH_BUCKETS, registry=self.registry,
        )
        self.store_batch_size = Histogram(
            "cliper_store_write_items", "Items per store write transaction (one disk sync each)",
            buckets=_BATCH_BUCKETS, registry=self.registry,
        )
        self.index_size = Gauge("cliper_index_items", "Items in the search index", registry=self.registry,
                                multiprocess_mode="mostrecent")
        self.recommendations = Counter(
            "cliper_recommendations", "Recommendation requests", ["source"], registry=self.registry
        )
        self.log_entries_applied = Counter(
            "cliper_log_entries_applied",
            "Store log entries applied to the index and users (at start-up, those after the snapshot loaded)",
            ["log"], registry=self.registry,
        )
        self._stages = {stage: self.stage_seconds.labels(stage) for stage in STAGES}
        self.cache_up.set(1)
        for result in ("hit", "miss"):
            self.cache_requests.labels(result)
        for name in ("items", "interactions"):
            self.log_entries_applied.labels(name)

    def exposition_registry(self) -> CollectorRegistry:
        """What GET /metrics reports: this registry, or every worker process's values."""
        if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
            return self.registry
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        return registry

    def timed(self, stage: str) -> Timer:
        """A context manager that observes the wall time of its body under `stage`."""
        return self._stages[stage].time()
