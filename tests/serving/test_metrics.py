"""/metrics under gunicorn: samples of every worker merged, by route, status and collection."""

from __future__ import annotations

import requests
from prometheus_client.parser import text_string_to_metric_families

from orchestration.store.cache import RecordCache
from orchestration.store.keys import record_key

RECORD_ROUTE = "/v1/collections/{collection}/records/{index_key}/{index_value:path}"


def samples(stack) -> dict[tuple[str, tuple], float]:
    text = requests.get(stack.api.base + "/metrics", timeout=5).text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(found: dict, name: str, **labels) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


def test_requests_are_counted_by_route_status_and_collection_across_workers(stack):
    before = samples(stack)
    statuses = stack.statuses("/v1/collections/customer/records/id/12345", n=16)
    stack.get("/v1/collections/customer/records/id/999")
    stack.get("/v1/collections/nope/records/id/1")
    after = samples(stack)

    ok = dict(route=RECORD_ROUTE, method="GET", status="200", collection="customer")
    assert statuses == [200] * 16
    assert value(after, "larder_requests_total", **ok) - value(before, "larder_requests_total", **ok) == 16
    not_found = dict(ok, status="404")
    assert value(after, "larder_requests_total", **not_found) - value(before, "larder_requests_total", **not_found) == 1
    unknown = dict(ok, status="404", collection="")  # unknown collections never become label values
    assert value(after, "larder_requests_total", **unknown) - value(before, "larder_requests_total", **unknown) == 1
    count = ("larder_request_duration_seconds_count", (("route", RECORD_ROUTE),))
    assert after[count] - before.get(count, 0) == 18


def test_cache_hits_misses_and_state_fallbacks_are_counted(stack):
    RecordCache([stack.us.server]).delete_many([record_key("orders", "order_id", "1")])
    before = samples(stack)

    stack.get("/v1/collections/orders/records/order_id/1")  # a miss, answered from state
    stack.get("/v1/collections/orders/records/order_id/1")  # put back: a hit
    after = samples(stack)

    def delta(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("larder_cache_misses_total", collection="orders") == 1
    assert delta("larder_state_fallbacks_total", collection="orders", reason="cache_miss") == 1
    assert delta("larder_cache_hits_total", collection="orders") == 1
    assert delta("larder_state_fallbacks_total", collection="orders", reason="cache_down") == 0
