"""State reads in place of the cache are bounded: all workers but one, never the whole host.

Through gunicorn on Postgres (a lock held on the index table makes misses wait, as a lock
pile-up does, while API keys still load), and `StateReadSlots` across real processes.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time

import pytest
import requests
import sqlalchemy as sa

from orchestration.store.cache import RecordCache
from orchestration.store.keys import record_key
from orchestration.store.state import StateStore
from orchestration.sync import Services, run_sync
from serving import errors
from serving.fallback import StateReadSlots
from tests.serving.conftest import CUSTOMER_SYNC, CUSTOMERS, ApiServer, write_customers
from tests.support import MemcachedProcess, ProjectFactory


def _hold_slot(folder, slots, pipe):
    with StateReadSlots(folder, slots).hold():
        pipe.send("taken")
        pipe.poll(30)  # until the test says so (or closes its end), or is killed


@pytest.fixture
def holders(tmp_path):
    """Start processes that each take a slot and keep it until released (or killed).

    Pipes, not multiprocessing Events: an Event whose waiter was killed blocks its `set` forever."""
    context = multiprocessing.get_context("fork")
    started = []

    def hold(slots: int):
        ours, theirs = context.Pipe()
        process = context.Process(target=_hold_slot, args=(tmp_path, slots, theirs))
        process.start()
        assert ours.poll(30) and ours.recv() == "taken"
        started.append((process, ours))
        return process

    yield hold
    for process, pipe in started:
        if process.is_alive():
            pipe.send("release")
        process.join(timeout=10)
        pipe.close()


def test_a_free_slot_is_taken_at_once(tmp_path, holders):
    holders(2)

    with StateReadSlots(tmp_path, 2).hold():
        pass


def test_with_every_slot_held_for_long_the_next_read_is_refused_with_503(tmp_path, holders):
    holders(2)
    holders(2)
    time.sleep(0.2)  # the holders are now older than `stuck_after`: the store looks stuck

    with pytest.raises(errors.ApiError) as refused:
        with StateReadSlots(tmp_path, 2, patience=30, stuck_after=0.1).hold():  # not waited for
            pass

    assert refused.value.error_code == "state_unavailable"
    assert refused.value.headers["Retry-After"] == "1"


def test_with_every_slot_held_briefly_the_next_read_waits_for_one_then_gives_up(tmp_path, holders):
    holders(1)

    with pytest.raises(errors.ApiError) as refused:
        with StateReadSlots(tmp_path, 1, patience=0.2, stuck_after=60).hold():
            pass

    assert refused.value.error_code == "state_unavailable"


def test_a_slot_held_by_a_worker_that_died_is_free_again(tmp_path, holders):
    holder = holders(1)

    os.kill(holder.pid, signal.SIGKILL)
    holder.join(timeout=10)

    with StateReadSlots(tmp_path, 1).hold():
        pass


@pytest.fixture
def postgres_region(tmp_path, postgres_url):
    """Customers synced into Postgres and a memcached, served by 3 workers (so 2 state slots)."""
    memcached = MemcachedProcess()
    memcached.start()
    warehouse = tmp_path / "warehouse.duckdb"
    write_customers(warehouse, CUSTOMERS)
    factory = ProjectFactory(tmp_path, warehouse_url=f"duckdb:///{warehouse}", state_url=postgres_url)
    project = factory([CUSTOMER_SYNC], regions={"us": [memcached.server]})
    services = Services(project)
    run_sync(services, "customer_profiles", origin="test")
    services.close()
    state = StateStore(postgres_url)
    _, secret = state.create_key("slots")
    server = ApiServer(project.path, "us", tmp_path / "api.log", workers=3)
    server.start()
    cache = RecordCache([memcached.server])
    deadline = time.monotonic() + 60
    while cache.servers_missing_sentinel():  # the API's watcher rehydrates a region with no sentinel
        assert time.monotonic() < deadline
        time.sleep(0.2)
    yield server, secret, cache, postgres_url
    server.stop()
    cache.close()
    state.dispose()
    memcached.stop()


def waiting_on_locks(url: str) -> int:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        count = conn.execute(sa.text(
            "select count(*) from pg_stat_activity where wait_event_type = 'Lock' and query ilike '%record_indices%'"
        )).scalar()
    engine.dispose()
    return count


def test_with_the_state_store_stuck_misses_beyond_all_workers_but_one_answer_503_and_hits_go_on(postgres_region):
    server, secret, cache, url = postgres_region
    headers = {"Authorization": f"Bearer {secret}"}
    lookup = f"{server.base}/v1/collections/customer/records/id/{{}}"
    cache.delete_many([record_key("customer", "id", str(n)) for n in (2, 3, 4)])  # three misses
    locker = sa.create_engine(url)
    lock = locker.connect()
    transaction = lock.begin()
    lock.execute(sa.text("lock table record_indices in access exclusive mode"))
    stuck: list[requests.Response] = []
    threads = [threading.Thread(target=lambda n=n: stuck.append(requests.get(lookup.format(n), headers=headers, timeout=60)))
               for n in (2, 3)]
    try:
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 30
        while waiting_on_locks(url) < 2:  # both misses are waiting on the store, holding both slots
            assert time.monotonic() < deadline, "the two misses never reached the state store"
            time.sleep(0.05)

        refused = requests.get(lookup.format(4), headers=headers, timeout=10)
        served = requests.get(lookup.format(12345), headers=headers, timeout=10)

        assert all(thread.is_alive() for thread in threads)  # still waiting: the 503 came from the bound
    finally:
        transaction.rollback()
        lock.close()
        locker.dispose()
        for thread in threads:
            thread.join(timeout=60)

    assert refused.status_code == 503
    assert refused.json()["error"]["code"] == "state_unavailable"
    assert refused.headers["Retry-After"] == "1"
    assert served.status_code == 200 and served.headers["X-Larder-Source"] == "cache"
    assert sorted(r.status_code for r in stuck) == [200, 200]  # answered once the store was back
