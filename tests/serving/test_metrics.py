"""/metrics under gunicorn: samples of every worker merged, by route, status and collection.

Workers add their tallies every second (serving.metrics.FLUSH_SECONDS), so the tests read
/metrics until the expected samples have arrived, for a few seconds at most.
"""

from __future__ import annotations

import time

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from orchestration.store.cache import RecordCache
from orchestration.store.keys import record_key
from serving.metrics import FLUSH_SECONDS

RECORD_ROUTE = "/v1/collections/{collection}/records/{index_key}/{index_value:path}"


def samples(stack) -> dict[tuple[str, tuple], float]:
    text = requests.get(stack.api.base + "/metrics", timeout=5).text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def settled_samples(stack) -> dict[tuple[str, tuple], float]:
    """/metrics once every worker has flushed what earlier tests asked of it."""
    time.sleep(FLUSH_SECONDS * 1.5)
    return samples(stack)


def value(found: dict, name: str, **labels) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


def samples_once(stack, expected, timeout: float = 5.0) -> dict:
    """/metrics read until `expected(samples)` holds (every worker flushed), else the last read."""
    deadline = time.monotonic() + timeout
    while True:
        found = samples(stack)
        if expected(found) or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def test_requests_are_counted_by_route_status_and_collection_across_workers(stack):
    before = settled_samples(stack)
    statuses = stack.statuses("/v1/collections/customer/records/id/12345", n=16)
    stack.get("/v1/collections/customer/records/id/999")
    stack.get("/v1/collections/nope/records/id/1")
    ok = dict(route=RECORD_ROUTE, method="GET", status="200", collection="customer")
    count = ("larder_request_duration_seconds_count", (("route", RECORD_ROUTE),))
    after = samples_once(stack, lambda found: found.get(count, 0) - before.get(count, 0) >= 18)

    assert statuses == [200] * 16
    assert value(after, "larder_requests_total", **ok) - value(before, "larder_requests_total", **ok) == 16
    not_found = dict(ok, status="404")
    assert value(after, "larder_requests_total", **not_found) - value(before, "larder_requests_total", **not_found) == 1
    unknown = dict(ok, status="404", collection="")  # unknown collections never become label values
    assert value(after, "larder_requests_total", **unknown) - value(before, "larder_requests_total", **unknown) == 1
    assert after[count] - before.get(count, 0) == 18
    buckets = [v for (name, labels), v in after.items()
               if name == "larder_request_duration_seconds_bucket" and ("route", RECORD_ROUTE) in labels]
    assert max(buckets) == after[count]  # the +Inf bucket holds every observation


def test_cache_hits_misses_and_state_fallbacks_are_counted(stack):
    RecordCache([stack.us.server]).delete_many([record_key("orders", "order_id", "1")])
    before = settled_samples(stack)

    stack.get("/v1/collections/orders/records/order_id/1")  # a miss, answered from state
    stack.get("/v1/collections/orders/records/order_id/1")  # put back: a hit

    def delta(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    def counted(found) -> bool:
        return all(value(found, name, collection="orders") > value(before, name, collection="orders")
                   for name in ("larder_cache_misses_total", "larder_cache_hits_total"))

    after = samples_once(stack, counted)

    assert delta("larder_cache_misses_total", collection="orders") == 1
    assert delta("larder_state_fallbacks_total", collection="orders", reason="cache_miss") == 1
    assert delta("larder_cache_hits_total", collection="orders") == 1
    assert delta("larder_state_fallbacks_total", collection="orders", reason="cache_down") == 0


def test_a_tally_lands_in_the_same_buckets_and_sum_as_single_observations():
    from prometheus_client import REGISTRY

    from serving.metrics import RequestTally

    route = "/test/tally"
    tally = RequestTally()
    for seconds in (0.0003, 0.003, 0.003, 3.0):
        tally.request(route, "GET", "200", "", seconds)
    tally.flush()

    def sample(name, **labels):
        return REGISTRY.get_sample_value(name, {"route": route, **labels})

    assert sample("larder_request_duration_seconds_bucket", le="0.0005") == 1
    assert sample("larder_request_duration_seconds_bucket", le="0.002") == 1
    assert sample("larder_request_duration_seconds_bucket", le="0.005") == 3
    assert sample("larder_request_duration_seconds_bucket", le="2.5") == 3
    assert sample("larder_request_duration_seconds_bucket", le="+Inf") == 4
    assert sample("larder_request_duration_seconds_sum") == pytest.approx(3.0063)
    assert REGISTRY.get_sample_value(
        "larder_requests_total", {"route": route, "method": "GET", "status": "200", "collection": ""}) == 4


def test_made_up_http_methods_add_no_series_to_metrics(stack):
    def other(found) -> float:
        return sum(v for (name, labels), v in found.items()
                   if name == "larder_requests_total" and ("method", "OTHER") in labels)

    before = settled_samples(stack)
    for i in range(40):  # letters only: the proxy refuses a method with digits itself (400, never counted)
        requests.request(f"MADEUP{chr(65 + i % 26)}{chr(65 + i // 26)}", stack.api.base + "/v1/collections", timeout=5)
    after = samples_once(stack, lambda found: other(found) - other(before) >= 40)

    methods = {dict(labels).get("method") for name, labels in after if name == "larder_requests_total"}
    assert not [m for m in methods if m.startswith("MADEUP")]
    assert other(after) - other(before) == 40
    assert methods <= {"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "OTHER"}
