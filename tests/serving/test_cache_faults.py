"""A served region whose Memcached misbehaves: frozen, restarted empty, one server of three lost.

Lookups keep being answered (from the state when the cache cannot), a frozen server stops
costing a timeout per lookup once its circuit opens, and a region that lost its data is
rehydrated by the API's own watcher, without Dagster.
"""

from __future__ import annotations

import time

from orchestration.store.cache import RecordCache
from orchestration.store.keys import record_key
from tests.serving.conftest import CUSTOMERS

LOOKUP = "/v1/collections/customer/records/id/{}"


def wait_until(condition, *, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not within {seconds} s"
        time.sleep(0.2)


def test_with_memcached_frozen_lookups_are_answered_from_state_without_waiting_each_time(fresh_stack):
    fresh_stack.us.freeze()
    try:
        started = time.monotonic()
        answers = [fresh_stack.get(LOOKUP.format(12345)) for _ in range(40)]
        elapsed = time.monotonic() - started
    finally:
        fresh_stack.us.thaw()

    assert [a.status_code for a in answers] == [200] * 40
    assert {a.headers["X-Larder-Source"] for a in answers} == {"state-cache-down"}
    # Generous: a read timeout per lookup (no circuit breaker) took 40 s and more.
    assert elapsed < 20, f"40 lookups took {elapsed:.1f} s with memcached frozen"


def test_a_restarted_memcached_is_rehydrated_by_the_api_without_dagster(fresh_stack):
    cache = RecordCache([fresh_stack.us.server])
    never_asked = record_key("customer", "email", CUSTOMERS[3][1])
    wait_until(lambda: not cache.servers_missing_sentinel(), seconds=60, what="the first rehydrate at start-up")

    fresh_stack.us.restart()

    wait_until(lambda: cache.get(never_asked) is not None, seconds=60, what="a record nobody asked for is back")
    assert cache.servers_missing_sentinel() == []
    assert fresh_stack.get(f"/v1/collections/customer/records/email/{CUSTOMERS[3][1]}").headers["X-Larder-Source"] == "cache"
    cache.close()
