"""Prometheus metrics: requests by route, status and collection, latency, cache hits and fallbacks.

Under gunicorn every worker writes its samples to `$PROMETHEUS_MULTIPROC_DIR` (set by
serving/gunicorn.conf.py before any worker imports this module) and `/metrics` merges them;
without that variable (tests in one process) the default registry is used.

On the hot path a request costs one counter increment and one histogram observation on
label children looked up in a local dict; the children are created once per label combination.
"""

from __future__ import annotations

import os
import time

import falcon
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client import multiprocess

REQUESTS = Counter(
    "larder_requests_total", "API requests answered", ["route", "method", "status", "collection"]
)
LATENCY = Histogram(
    "larder_request_duration_seconds",
    "Time to answer an API request, in seconds",
    ["route"],
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
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


class CacheCounters:
    """The cache counters of one collection, bound once so the hot path only increments."""

    __slots__ = ("hit", "miss", "fallback_miss", "fallback_down")

    def __init__(self, collection: str):
        self.hit = CACHE_HITS.labels(collection)
        self.miss = CACHE_MISSES.labels(collection)
        self.fallback_miss = FALLBACKS.labels(collection, "cache_miss")
        self.fallback_down = FALLBACKS.labels(collection, "cache_down")


class MetricsMiddleware:
    """Counts and times every request; it runs first so auth failures are counted too."""

    def __init__(self, collections: tuple[str, ...]):
        self._collections = frozenset(collections)
        self._requests: dict[tuple[str, str, int, str], object] = {}
        self._latency: dict[str, object] = {}

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        req.context.started = time.perf_counter()

    def process_response(self, req: falcon.Request, resp: falcon.Response, resource, req_succeeded: bool) -> None:
        started = req.context.get("started")
        if started is None:
            return
        route = req.uri_template or UNMATCHED_ROUTE
        collection = req.context.get("collection", NO_COLLECTION)
        labels = (route, req.method, resp.status_code, collection)
        counter = self._requests.get(labels)
        if counter is None:
            counter = self._requests[labels] = REQUESTS.labels(route, req.method, str(resp.status_code), collection)
        counter.inc()
        histogram = self._latency.get(route)
        if histogram is None:
            histogram = self._latency[route] = LATENCY.labels(route)
        histogram.observe(time.perf_counter() - started)

    def process_resource(self, req: falcon.Request, resp: falcon.Response, resource, params: dict) -> None:
        # Only configured collections become label values: a typo in a URL must not add a series.
        collection = params.get("collection")
        if collection in self._collections:
            req.context.collection = collection


class MetricsResource:
    """/metrics in Prometheus' text format, merged across gunicorn workers when there are several."""

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.data = generate_latest(_registry())
        resp.content_type = CONTENT_TYPE_LATEST


def _registry():
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return REGISTRY
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    return registry
