"""The API when its state store hangs, refuses connections or is slow: Postgres behind a TCP proxy.

The syncs write Postgres directly; the API (gunicorn via `larder serve`) reads it through a
forwarder process the tests freeze (SIGSTOP: the store accepts connections and never answers),
kill (connections refused) or slow down.
"""

from __future__ import annotations

import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
import sqlalchemy.exc
from sqlalchemy.engine import make_url

from bench.processes import TcpProxy
from orchestration.store.cache import RecordCache
from orchestration.store.keys import record_key
from orchestration.store.state import make_engine
from serving.state_reads import api_state_store
from tests.serving.conftest import CUSTOMERS, Stack, write_customers

JANE = "/v1/collections/customer/records/id/12345"
NOBODY = "/v1/collections/customer/records/id/999999"


def proxied(url: str, proxy: TcpProxy) -> str:
    return make_url(url).set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)


def target_of(url: str) -> tuple[str, int]:
    parsed = make_url(url)
    return parsed.host or "127.0.0.1", parsed.port or 5432


@pytest.fixture
def proxy(postgres_url):
    running = TcpProxy(*target_of(postgres_url)).start()
    yield running
    running.kill()


@pytest.fixture
def postgres_stack(tmp_path, postgres_url, proxy):
    running = Stack(tmp_path, state_url=postgres_url, api_state_url=proxied(postgres_url, proxy)).start()
    yield running
    running.stop()


def assert_state_unavailable(response: requests.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["Content-Type"] == "application/json"
    assert response.json()["error"]["code"] == "state_unavailable"
    assert int(response.headers["Retry-After"]) >= 1


def test_with_the_state_store_hung_cached_records_are_served_and_misses_answer_503(postgres_stack, proxy):
    stack = postgres_stack
    assert set(stack.statuses(JANE)) == {200}  # in the cache, every worker has loaded the keys

    proxy.freeze()
    time.sleep(2.5)  # past api.key_refresh_seconds: every worker's key reload now meets the hung store
    cached = [stack.get(JANE) for _ in range(12)]
    missed = stack.get(NOBODY)
    batch = stack.get("/v1/collections/customer/records/id", params={"values": ["12345", "999999"]})
    lineage = stack.get("/v1/collections/customer/lineage")
    runs = stack.get("/v1/syncs/customer_profiles/runs")

    assert [r.status_code for r in cached] == [200] * 12, [r.text for r in cached]
    assert {r.headers["X-Larder-Source"] for r in cached} == {"cache"}
    for response in (missed, batch, lineage, runs):
        assert_state_unavailable(response)

    proxy.thaw()
    deadline = time.monotonic() + 10
    while stack.get(NOBODY).status_code != 404:
        assert time.monotonic() < deadline, "misses were not answered from state again after it came back"
        time.sleep(0.2)


def test_with_the_state_store_refusing_connections_a_miss_answers_state_unavailable(postgres_stack, proxy):
    stack = postgres_stack
    assert set(stack.statuses(JANE)) == {200}  # every worker has loaded the keys
    proxy.kill()

    assert_state_unavailable(stack.get(NOBODY))
    assert stack.get(JANE).status_code == 200


def test_the_error_log_names_no_index_value_and_repeats_a_warning_once_per_interval(postgres_stack, proxy):
    from serving.errors import LOG_INTERVAL_SECONDS

    stack = postgres_stack
    assert set(stack.statuses(JANE)) == {200}
    proxy.kill()
    RecordCache([stack.us.server]).delete_many([record_key("customer", "email", "jane@example.com")])
    started = time.monotonic()
    for _ in range(3):
        answers = stack.statuses("/v1/collections/customer/records/id/6055750", n=40)
        answers += stack.statuses("/v1/collections/customer/records/email/jane%40example.com", n=40)
        assert set(answers) == {503}
    elapsed = time.monotonic() - started
    stack.api.stop()  # flushes gunicorn's log

    log = (stack.root / "gunicorn-us.log").read_text()
    assert "6055750" not in log
    assert "jane@example.com" not in log
    assert "L1:customer" not in log
    state_lines = [line for line in log.splitlines() if "state store" in line]
    intervals = int(elapsed // LOG_INTERVAL_SECONDS) + 1
    assert 1 <= len(state_lines) <= stack.workers * intervals * 2, state_lines  # not one per request


def test_a_lookup_racing_a_deleting_sync_never_puts_the_deleted_record_back(tmp_path, postgres_url):
    """Lookups miss the cache while a sync deletes their records: none may be served afterwards.

    The API reads the state through a link that answers 0.04 s late (a read takes about six round
    trips, well within the API's deadline), so lookups that read a record just before the delete
    commits put it back just after the sync removed it from the cache.
    """
    slow = TcpProxy(*target_of(postgres_url), reply_delay=0.04).start()
    stack = Stack(tmp_path, state_url=postgres_url, api_state_url=proxied(postgres_url, slow), workers=4)
    customers = [(1000 + i, f"user{i}@example.com", f"User {i}", {"concerts": []}) for i in range(40)]
    try:
        stack.start()
        cache = RecordCache([stack.us.server])
        served_after_delete = []
        for _ in range(4):
            write_customers(stack.warehouse, CUSTOMERS + customers)
            stack.sync()
            stack.us.flush()  # every lookup below misses and reads the state
            deleted = _hammer_during(stack, [c[0] for c in customers],
                                     lambda: (write_customers(stack.warehouse, CUSTOMERS), stack.sync()))
            # A lookup that put a record back reads the state again right after (in the background)
            # and takes back what went: give those reads a moment to finish, then nothing may be left.
            deleted_keys = [record_key("customer", "id", str(i)) for i in deleted]
            deadline = time.monotonic() + 5
            while cache.get_many(deleted_keys) and time.monotonic() < deadline:
                time.sleep(0.1)
            assert cache.get_many(deleted_keys) == {}
            with ThreadPoolExecutor(max_workers=8) as pool:
                answers = pool.map(lambda id_: (id_, answer_from_state(stack, f"/v1/collections/customer/records/id/{id_}")),
                                   deleted)
                served_after_delete += [(id_, r.status_code, r.headers.get("X-Larder-Source"))
                                        for id_, r in answers if r.status_code != 404]
        assert served_after_delete == []
    finally:
        stack.stop()
        slow.kill()


def answer_from_state(stack: Stack, path: str) -> requests.Response:
    """The answer once the state store is read again (a slow read may have made the API refuse
    state reads for a second: 503 state_unavailable)."""
    deadline = time.monotonic() + 10
    while (response := stack.get(path)).status_code == 503 and time.monotonic() < deadline:
        time.sleep(0.2)
    return response


def _hammer_during(stack: Stack, ids: list[int], action) -> list[int]:
    """Look ids up from 8 threads while `action` runs and until in-flight lookups are done."""
    stop = threading.Event()

    def hammer() -> None:
        rng = random.Random()
        while not stop.is_set():
            try:
                stack.get(f"/v1/collections/customer/records/id/{rng.choice(ids)}")
            except requests.RequestException:
                pass

    threads = [threading.Thread(target=hammer) for _ in range(8)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(0.5)
        action()
        time.sleep(0.5)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    return ids


def test_the_api_state_store_gives_up_on_a_server_that_stops_answering(postgres_url, proxy):
    state = api_state_store(proxied(postgres_url, proxy))
    state.ping()
    proxy.freeze()
    try:
        with pytest.raises(sqlalchemy.exc.OperationalError):
            state.ping()  # the pooled connection: no answer within the io timeout, closed
    finally:
        proxy.thaw()
    state.ping()  # a new connection once it answers again
    state.dispose()


def test_statement_timeouts_belong_to_each_engine_and_keep_the_urls_options(postgres_url, sqlite_url):
    api, sync = make_engine(postgres_url, statement_timeout=0.5), make_engine(postgres_url)
    try:
        with api.connect() as conn:
            assert conn.exec_driver_sql("show statement_timeout").scalar() == "500ms"
            assert conn.exec_driver_sql("show search_path").scalar().startswith("larder_test_")
            with pytest.raises(sqlalchemy.exc.OperationalError):
                conn.exec_driver_sql("select pg_sleep(2)")
        with sync.connect() as conn:
            assert conn.exec_driver_sql("show statement_timeout").scalar() == "0"
    finally:
        api.dispose()
        sync.dispose()
    lite = make_engine(sqlite_url, statement_timeout=0.25)
    with lite.connect() as conn:
        assert conn.exec_driver_sql("pragma busy_timeout").scalar() == 250
    lite.dispose()
