"""Prometheus metrics: requests by route, status and collection, latency, cache hits and fallbacks.

Under gunicorn every worker writes its samples to `$PROMETHEUS_MULTIPROC_DIR` (set by
serving/gunicorn.conf.py before any worker imports this module) and `/metrics` merges them;
without that variable (tests in one process) the default registry is used.

A request's samples are tallied in the worker (plain dict increments under a lock) and added to
the Prometheus metrics by `TALLY.flush()`: every FLUSH_SECONDS from a background thread, before
the worker answers /metrics, and when it exits. Each Prometheus increment in multiprocess mode is
a locked write to a memory-mapped file (a fifth of a lookup's time when done per request), so
/metrics may lag the other workers by up to FLUSH_SECONDS; no sample is lost.
"""

from __future__ import annotations

import os
import threading
import time
from bisect import bisect_left
from collections import Counter as Tally
from http import HTTPStatus

import falcon
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
FLUSH_SECONDS = 1.0

REQUESTS = Counter(
    "larder_requests_total", "API requests answered", ["route", "method", "status", "collection"]
)
LATENCY = Histogram(
    "larder_request_duration_seconds",
    "Time to answer an API request, in seconds",
    ["route"],
    buckets=LATENCY_BUCKETS,
)
CACHE_HITS = Counter("larder_cache_hits_total", "Record reads answered by the region's cache", ["collection"])
CACHE_MISSES = Counter(
    "larder_cache_misses_total", "Record reads the cache did not have (the state store was asked)", ["collection"]
)
FALLBACKS = Counter(
    "larder_state_fallbacks_total",
    "Record reads answered from the durable state: after a cache miss, or while the cache was down",
    ["collection", "reason"],
)

UNMATCHED_ROUTE = "unmatched"
NO_COLLECTION = ""
# Label values come from known sets only, so no request can add series to /metrics: a method or
# status outside these is OTHER, a route is one of the app's URI templates (`unmatched` for any
# other path) and a collection a configured one.
OTHER = "OTHER"
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT"})
KNOWN_STATUSES = {status.value: str(status.value) for status in HTTPStatus}


class RequestTally:
    """This worker's samples not yet added to the Prometheus metrics."""

    def __init__(self):
        self._lock = threading.Lock()
        self._flusher: threading.Thread | None = None
        self._reset()

    def _reset(self) -> None:
        self._requests: Tally[tuple[str, str, str, str]] = Tally()
        self._latency: dict[str, list] = {}  # route → [sum of seconds, count per bucket (+Inf last)]
        self._cache: Tally[tuple[Counter, tuple[str, ...]]] = Tally()

    def request(self, route: str, method: str, status: str, collection: str, seconds: float) -> None:
        with self._lock:
            self._requests[route, method, status, collection] += 1
            latency = self._latency.get(route)
            if latency is None:
                latency = self._latency[route] = [0.0, [0] * (len(LATENCY_BUCKETS) + 1)]
            latency[0] += seconds
            latency[1][bisect_left(LATENCY_BUCKETS, seconds)] += 1  # the first bucket with le >= seconds

    def cache_hits(self, collection: str, n: int = 1) -> None:
        with self._lock:
            self._cache[CACHE_HITS, (collection,)] += n

    def cache_misses(self, collection: str, n: int = 1) -> None:
        """Keys the cache did not have, each then asked of the state store."""
        with self._lock:
            self._cache[CACHE_MISSES, (collection,)] += n
            self._cache[FALLBACKS, (collection, "cache_miss")] += n

    def cache_down(self, collection: str, n: int = 1) -> None:
        with self._lock:
            self._cache[FALLBACKS, (collection, "cache_down")] += n

    def start_flushing(self) -> None:
        """Flush every FLUSH_SECONDS from a daemon thread of this process (once per process)."""
        with self._lock:
            if self._flusher is None or not self._flusher.is_alive():
                self._flusher = threading.Thread(target=self._flush_forever, name="larder-metrics", daemon=True)
                self._flusher.start()

    def _flush_forever(self) -> None:
        while True:
            time.sleep(FLUSH_SECONDS)
            self.flush()

    def flush(self) -> None:
        """Add the tallied samples to the Prometheus metrics and start a new tally."""
        with self._lock:
            requests, latency, cache = self._requests, self._latency, self._cache
            self._reset()
        for request_labels, n in requests.items():
            REQUESTS.labels(*request_labels).inc(n)
        for route, (total, counts) in latency.items():
            _add_to_histogram(LATENCY.labels(route), total, counts)
        for (counter, labels), n in cache.items():
            counter.labels(*labels).inc(n)


def _add_to_histogram(histogram: Histogram, total: float, counts: list[int]) -> None:
    """Add a tally of observations (their sum, and how many fell in each bucket) to a histogram.

    prometheus_client's only public way in is `observe()`, one sample at a time: two locked writes to
    a memory-mapped file per request, the cost the tally exists to avoid. So the tally is added to the
    histogram's own values (`_sum`, `_buckets`), here and nowhere else;
    test_metrics.test_a_tally_lands_in_the_same_buckets_and_sum_as_single_observations fails if a
    prometheus_client release changes them."""
    histogram._sum.inc(total)
    for bucket, n in zip(histogram._buckets, counts, strict=True):
        if n:
            bucket.inc(n)


TALLY = RequestTally()


class MetricsMiddleware:
    """Counts and times every request; it runs first so auth failures are counted too."""

    def __init__(self, collections: tuple[str, ...]):
        self._collections = frozenset(collections)
        TALLY.start_flushing()

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        req.context.started = time.perf_counter()

    def process_response(self, req: falcon.Request, resp: falcon.Response, resource, req_succeeded: bool) -> None:
        started = req.context.get("started")
        if started is None:
            return
        collection: str = req.context.get("collection") or NO_COLLECTION
        method = req.method if req.method in KNOWN_METHODS else OTHER
        TALLY.request(req.uri_template or UNMATCHED_ROUTE, method,
                      KNOWN_STATUSES.get(resp.status_code, OTHER), collection, time.perf_counter() - started)

    def process_resource(self, req: falcon.Request, resp: falcon.Response, resource, params: dict) -> None:
        # Only configured collections become label values: a typo in a URL must not add a series.
        collection = params.get("collection")
        if collection in self._collections:
            req.context.collection = collection


class MetricsResource:
    """/metrics in Prometheus' text format, merged across gunicorn workers when there are several."""

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        TALLY.flush()
        resp.data = generate_latest(_registry())
        resp.content_type = CONTENT_TYPE_LATEST


def _registry():
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return REGISTRY
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    return registry
