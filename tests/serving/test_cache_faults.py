"""A served region whose Memcached misbehaves: frozen, restarted empty, one server of three lost.

Lookups keep being answered (from the state when the cache cannot), a frozen server stops
costing a timeout per lookup once its circuit opens, and a region that lost its data is
rehydrated by the API's own watcher, without Dagster.
"""

from __future__ import annotations

import time

import orjson
import requests

from orchestration.store import envelope
from orchestration.store.cache import RecordCache
from orchestration.store.keys import record_key
from orchestration.store.state import StateStore
from orchestration.sync import Services, run_sync
from tests.serving.conftest import CUSTOMER_SYNC, CUSTOMERS, ApiServer, write_customers
from tests.serving.test_records import every_lookup, lookup
from tests.support import MemcachedProcess, ProjectFactory

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
    # us is left out of a run that renames the customer: stale, and owed the change
    renamed = (*CUSTOMERS[3][:2], "Tag Person v2", CUSTOMERS[3][3])
    write_customers(fresh_stack.warehouse, [*CUSTOMERS[:3], renamed])
    services = Services(fresh_stack.project)
    run_sync(services, "customer_profiles", origin="test", regions=["eu"])
    services.close()

    fresh_stack.us.restart()

    # the sentinel is written last: the region's rehydrate is over
    wait_until(lambda: not cache.servers_missing_sentinel(), seconds=60, what="the rehydrate after the restart")
    back = cache.get(never_asked)  # a record nobody asked for is back, as last computed
    assert back is not None and orjson.loads(envelope.unpack(back).body)["full_name"] == "Tag Person v2"
    answer = fresh_stack.get(f"/v1/collections/customer/records/email/{CUSTOMERS[3][1]}")
    assert answer.headers["X-Larder-Source"] == "cache" and answer.json()["full_name"] == "Tag Person v2"
    cache.close()


def test_a_region_that_loses_one_server_of_three_answers_everything_and_refills_it_when_back(tmp_path):
    servers = [MemcachedProcess() for _ in range(3)]
    for server in servers:
        server.start()
    warehouse = tmp_path / "warehouse.duckdb"
    write_customers(warehouse, CUSTOMERS)
    project = ProjectFactory(tmp_path, warehouse_url=f"duckdb:///{warehouse}", state_url=f"sqlite:///{tmp_path / 'state.db'}")(
        [CUSTOMER_SYNC], regions={"us": [s.server for s in servers]})
    services = Services(project)
    run_sync(services, "customer_profiles", origin="test")
    services.close()
    state = StateStore(project.spec.state.url)
    _, secret = state.create_key("three")
    api = ApiServer(project.path, "us", tmp_path / "api.log")
    api.start()
    cache = RecordCache([s.server for s in servers])
    keys = [record_key("customer", index, str(value)) for index, value in every_lookup()]
    try:
        wait_until(lambda: not cache.servers_missing_sentinel(), seconds=60, what="the first rehydrate")
        # The server that holds the most keys (ports are random, and so is which server a key hashes to).
        held = {server: [key for key in keys if RecordCache([server.server]).get(key) is not None] for server in servers}
        lost = max(servers, key=lambda server: len(held[server]))
        lost_keys = held[lost]
        assert lost_keys, "no server held any of the keys: nothing would be measured"

        lost.stop()
        answers = [requests.get(f"{api.base}{lookup(index, value)}", headers={"Authorization": f"Bearer {secret}"},
                                timeout=10) for index, value in every_lookup()]
        assert [a.status_code for a in answers] == [200] * len(answers)
        assert "state-cache-down" in {a.headers["X-Larder-Source"] for a in answers}

        lost.start()  # back, empty: the watcher rehydrates the region
        wait_until(lambda: all(cache.get(key) is not None for key in lost_keys), seconds=60,
                   what="the lost server's keys are back")
    finally:
        api.stop()
        cache.close()
        state.dispose()
        for server in servers:
            server.stop()
