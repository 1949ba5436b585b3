"""Prometheus metrics of one server (GET /metrics): requests, errors, queue, batches, tokens, caches.

Each app has its own registry, so several servers in one process (tests, embedding) do not mix.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

_PREFIX = "vidlab_serve"


class HttpMetrics:
    """What the HTTP layer sees: requests by route, model and status; errors by kind; latency."""

    def __init__(self, registry: CollectorRegistry):
        self.requests = Counter(f"{_PREFIX}_requests", "HTTP requests answered, by route, model and status.",
                                ["route", "model", "status"], registry=registry)
        self.errors = Counter(f"{_PREFIX}_errors", "Requests answered with an error, by kind (the error code).",
                              ["kind"], registry=registry)
        self.latency = Histogram(f"{_PREFIX}_request_seconds", "Time from a chat request's arrival to its last byte.",
                                 ["stream"], registry=registry,
                                 buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300))


class EngineMetrics:
    """What the model side sees: queue depth, batch sizes, tokens, generation time, cancellations."""

    def __init__(self, registry: CollectorRegistry):
        self.queue_depth = Gauge(f"{_PREFIX}_queue_depth", "Admitted requests not yet being generated.",
                                 registry=registry)
        self.batch_size = Histogram(f"{_PREFIX}_batch_size", "Requests per generated batch.", registry=registry,
                                    buckets=(1, 2, 4, 8, 16, 32, 64))
        self.prompt_tokens = Counter(f"{_PREFIX}_prompt_tokens", "Prompt tokens (text and visual) of answered "
                                     "requests.", registry=registry)
        self.generated_tokens = Counter(f"{_PREFIX}_generated_tokens", "Tokens generated.", registry=registry)
        self.generation_seconds = Counter(f"{_PREFIX}_generation_seconds", "Seconds the model spent generating "
                                          "(generated_tokens / generation_seconds is tokens per second).",
                                          registry=registry)
        self.tokens_per_second = Gauge(f"{_PREFIX}_tokens_per_second", "Tokens per second of the last batch "
                                       "(static) or of about the last second (continuous), all requests together.",
                                       registry=registry)
        self.running = Gauge(f"{_PREFIX}_running", "Requests being generated now.", registry=registry)
        self.occupancy = Gauge(f"{_PREFIX}_batch_occupancy", "Share of max_batch the generated rows filled, in "
                               "the last batch (static) or over about the last second of decoding (continuous).",
                               registry=registry)
        self.cancelled = Counter(f"{_PREFIX}_cancelled", "Requests whose client went away before the answer.",
                                 registry=registry)
        self.stopped = Counter(f"{_PREFIX}_stopped_batches", "Batches (static batching) or requests "
                               "(continuous) stopped before their end because cancelled (every request of the batch: "
                               "clients gone, or a stream's stop string).",
                               registry=registry)


class CacheCollector(Collector):
    """Hits, misses and bytes held of the caches, and the prompt tokens the prefix cache saved, read from them at
    scrape time."""

    def __init__(self, caches: Callable[[], dict[str, object]]):
        self.caches = caches

    def collect(self) -> Iterator[CounterMetricFamily]:
        hits = CounterMetricFamily(f"{_PREFIX}_cache_hits", "Cache hits, by cache.", labels=["cache"])
        misses = CounterMetricFamily(f"{_PREFIX}_cache_misses", "Cache misses, by cache.", labels=["cache"])
        held = GaugeMetricFamily(f"{_PREFIX}_cache_bytes", "Bytes a cache holds now, by cache.", labels=["cache"])
        saved = CounterMetricFamily(f"{_PREFIX}_prefix_tokens_saved", "Prompt tokens whose keys and values came "
                                    "from the prefix cache (not run through the model again).")
        for name, cache in self.caches().items():
            hits.add_metric([name], getattr(cache, "hits", 0))
            misses.add_metric([name], getattr(cache, "misses", 0))
            held.add_metric([name], getattr(cache, "bytes", 0))
            if hasattr(cache, "tokens_saved"):
                saved.add_metric([], cache.tokens_saved)
        yield hits
        yield misses
        yield held
        yield saved


class ReplicaMetrics(Collector):
    """Under Ray, the model replicas' own metrics (queue, batches, tokens, caches) at the gateway's /metrics, each
    sample labelled `replica` with the `system_fingerprint` its answers carry.

    Each replica sends a snapshot of its registry with every Ray health check; one not heard from for
    `stale_seconds` (stopped, or replaced by a new one) drops out.
    """

    def __init__(self, stale_seconds: float, clock: Callable[[], float] = time.monotonic):
        self.stale_seconds, self.clock = stale_seconds, clock
        self._snapshots: dict[str, tuple[float, list[Metric]]] = {}
        self._lock = threading.Lock()

    def update(self, replica: str, families: list[Metric]) -> None:
        with self._lock:
            self._snapshots[replica] = (self.clock(), families)

    def collect(self) -> Iterator[Metric]:
        now = self.clock()
        with self._lock:
            for replica in [r for r, (seen, _) in self._snapshots.items() if now - seen > self.stale_seconds]:
                del self._snapshots[replica]
            snapshots = sorted(self._snapshots.items())
        merged: dict[str, Metric] = {}  # one family per name, its samples from every replica
        for replica, (_, families) in snapshots:
            for family in families:
                out = merged.setdefault(family.name, Metric(family.name, family.documentation, family.type))
                for sample in family.samples:
                    out.add_sample(sample.name, {**sample.labels, "replica": replica}, sample.value, sample.timestamp)
        yield from merged.values()
