"""A large first sync written by several processes: what they write is what the sync's own process writes.

Two ways, each tested here: a model that can be read in parts (DuckDB, Postgres) is read, mapped,
kept and written by the same worker processes, each its own share (shares.py); any other (MariaDB)
is scanned by the sync's process and written by writer processes it hands the records to
(writers.py). Each case syncs one model into two collections: once written by the
sync's own process (`write_workers: 1`), once by two processes (a threshold of 100 records forces
them on a few thousand). The lookups, the state and the counts must be the same.
"""

from __future__ import annotations

import multiprocessing
import os
import signal

import pytest
import sqlalchemy as sa

from orchestration.store.state import StateStore
from orchestration.sync import SyncFailed, engine, shares, writers
from tests.sync.conftest import SyncHarness, make_warehouse_db, record_workers, sync_config

N = 3_000
COLUMNS = "id integer, name varchar, email varchar"
BY_PROCESSES = {"write_workers": 2, "parallel_min_rows": 100, "chunk_size": 200}
IN_PROCESS = {"write_workers": 1, "chunk_size": 200}
WAYS = {"duckdb": "shares", "postgres": "shares", "mariadb": "writers"}  # how each one's large first sync is written


def row(i: int, version: int = 1) -> tuple:
    """Some rows are rejected: no id, or an email another row has."""
    pk = None if i % 701 == 0 else i
    email = f"shared{i // 500}@x" if i % 500 in (1, 2) else f"{i}@x"
    return (pk, f"Person {i} v{version}", email)


def people(name: str, **overrides) -> dict:
    overrides.setdefault("rejections", {"max_share": 1.0, "samples": 100})
    return sync_config(name, collection=name, indices=["email"], delete="delete",
                       fields=[{"column": "id"}, {"column": "name"}, {"column": "email"}], **overrides)


@pytest.fixture
def used_processes(monkeypatch) -> dict[str, list[int]]:
    """How many processes each run that used them started, by way of writing."""
    return {"shares": record_workers(monkeypatch, engine, "ShareWorkers"),
            "writers": record_workers(monkeypatch, engine, "write_in_processes")}


@pytest.fixture(params=sorted(WAYS))
def warehouse(request) -> SyncHarness:
    """The harness on a DuckDB model, a Postgres one (both written in shares), a MariaDB one (by writers)."""
    h = _on(request.param, request)
    h.way = WAYS[request.param]
    return h


@pytest.fixture(params=["sqlite", "postgres"])
def state_url(request) -> str:
    return request.getfixturevalue(f"{request.param}_url")


def test_a_first_sync_written_by_processes_serves_and_stores_what_one_process_writes(warehouse, used_processes,
                                                                                    sqlite_url):
    _same_as_one_process(warehouse, used_processes, sqlite_url, warehouse.way)


def test_a_first_sync_in_shares_on_postgres_state_stores_what_one_process_writes(harness, used_processes,
                                                                                postgres_url):
    _same_as_one_process(harness, used_processes, postgres_url, "shares")


def _same_as_one_process(harness, used_processes, state_url: str, way: str) -> None:
    harness.table("people", COLUMNS, [row(i) for i in range(N)])
    harness.configure(people("single"), people("parallel"), state_url=state_url, extra={"defaults": IN_PROCESS})
    single = harness.run("single")
    assert used_processes == {"shares": [], "writers": []}
    harness.configure(people("single"), people("parallel"), state_url=state_url, extra={"defaults": BY_PROCESSES})
    parallel = harness.run("parallel")
    assert used_processes == {"shares": [], "writers": [], way: [2]}

    assert parallel.counts == single.counts and parallel.counts["written"] > 2_900
    assert _rejections(parallel) == _rejections(single) and len(_rejections(single)) > 10
    assert len(parallel.written_preview) == len(single.written_preview) > 0
    assert all(harness.get("parallel", "id", record["id"]) == record for record in parallel.written_preview)
    for i in range(N):
        assert harness.get("parallel", "id", i) == harness.get("single", "id", i)
        assert harness.get("parallel", "email", f"{i}@x") == harness.get("single", "email", f"{i}@x")
    state = StateStore(state_url)
    try:
        assert state.snapshot("parallel").keys() == state.snapshot("single").keys()
        assert state.pending_journal("parallel") == []
        assert state.last_run("parallel").counts["written"] == parallel.counts["written"]
    finally:
        state.dispose()


def _rejections(report) -> list[tuple]:
    """Rejection samples, in an order that does not depend on which process read a row first."""
    return sorted((s["reason"].split(" (also on")[0], s["pk"] or "", str(s["row"])) for s in report.rejection_samples)


def test_a_postgres_first_sync_in_shares_ends_the_view_its_parts_shared_before_writing(monkeypatch, request):
    """The transaction whose view the parts imported is open while they read, not while they write
    (a long-open transaction holds back the warehouse's vacuum)."""
    harness = _on("postgres", request)
    harness.table("people", COLUMNS, [row(i) for i in range(N)])
    open_views: list[int] = []
    real_write = shares.ShareWorkers.write

    def noting_open_views(self, rejected, on_progress):
        engine = sa.create_engine(harness.warehouse_url)
        with engine.connect() as conn:
            open_views.append(conn.exec_driver_sql(
                "select count(*) from pg_stat_activity where state like 'idle in transaction%%' "
                "and query like '%%pg_export_snapshot%%'").scalar())
        engine.dispose()
        return real_write(self, rejected, on_progress)

    monkeypatch.setattr(shares.ShareWorkers, "write", noting_open_views)
    harness.configure(people("parallel"), extra={"defaults": BY_PROCESSES})
    assert harness.run("parallel").counts["added"] > 2_900
    assert open_views == [0]


def test_later_runs_after_a_first_sync_by_processes_diff_and_delete_as_usual(harness, used_processes):
    harness.table("people", COLUMNS, [row(i) for i in range(N)])
    harness.configure(people("parallel"), extra={"defaults": BY_PROCESSES})
    harness.run("parallel")
    harness.table("people", COLUMNS, [row(i, version=2 if i % 3 == 0 else 1) for i in range(N) if i % 11])
    report = harness.run("parallel")
    assert used_processes["shares"] == [2]  # a later run is no first sync: its own process writes it
    assert report.counts["changed"] > 800 and report.counts["removed"] > 200
    assert harness.get("parallel", "id", 11) is None
    assert harness.get("parallel", "id", 3)["name"] == "Person 3 v2"


def test_a_merged_collection_first_synced_by_processes_composes_every_sync(harness, used_processes):
    harness.table("people", COLUMNS, [row(i) for i in range(N)])
    names = sync_config("names", collection="people", fields=[{"column": "id"}, {"column": "name"}])
    emails = sync_config("emails", collection="people", indices=["email"], rejections={"max_share": 1.0},
                         fields=[{"column": "id"}, {"column": "email", "to": "contact"}])
    emails["indices"] = ["contact"]
    harness.configure(names, emails, extra={"defaults": BY_PROCESSES})
    harness.run("names")
    harness.run("emails")
    assert used_processes["shares"] == [2, 2]
    assert harness.get("people", "id", 5) == {"id": 5, "name": "Person 5 v1", "contact": "5@x"}
    assert harness.get("people", "contact", "5@x") == {"id": 5, "name": "Person 5 v1", "contact": "5@x"}


def test_too_many_rejections_in_shares_write_nothing_and_stop_the_workers(harness, state_url):
    harness.table("people", COLUMNS, [row(i) for i in range(N)])
    harness.configure(people("parallel", rejections={"max_share": 0.0001}), state_url=state_url,
                      extra={"defaults": BY_PROCESSES})
    with pytest.raises(SyncFailed, match="rejected .* over the 0.0% allowed; nothing was written"):
        harness.run("parallel")
    assert harness.get("parallel", "id", 5) is None
    assert not _running("larder-share-")
    state = StateStore(state_url)
    try:
        assert state.snapshot("parallel") == {}
    finally:
        state.dispose()


def test_a_worker_killed_while_scanning_fails_the_run_before_anything_is_written(harness, monkeypatch):
    harness.table("people", COLUMNS, [row(i) for i in range(N)])
    real = shares.ShareWorkers.scanned

    def one_killed(self):  # the kernel's OOM killer, say, before the scan read anything
        os.kill(next(p for p in self._started.values() if p.name == "larder-share-0").pid, signal.SIGKILL)
        return real(self)

    monkeypatch.setattr(shares.ShareWorkers, "scanned", one_killed)
    harness.configure(people("parallel"), extra={"defaults": BY_PROCESSES})
    with pytest.raises(SyncFailed, match=r"larder-share-0 died \(exit code -9.*before it had scanned its share"):
        harness.run("parallel")
    assert harness.get("parallel", "id", 5) is None and not _running("larder-share-")
    monkeypatch.undo()
    assert harness.run("parallel").counts["added"] > 2_900


@pytest.mark.parametrize("way", sorted(set(WAYS.values())))
def test_a_process_killed_while_writing_fails_the_run_loudly_and_the_next_run_serves_everything(
        harness, monkeypatch, way, request):
    if way == "writers":
        harness = _on("mariadb", request)
    harness.table("people", COLUMNS, [row(i) for i in range(N)])
    if way == "shares":
        real_write = shares.ShareWorkers.write

        def killing_before_writes(self, rejected, on_progress):
            os.kill(next(p for p in self._started.values() if p.name == "larder-share-0").pid, signal.SIGKILL)
            return real_write(self, rejected, on_progress)

        monkeypatch.setattr(shares.ShareWorkers, "write", killing_before_writes)
        died = r"worker process larder-share-0 died \(exit code -9"
    else:
        real_serve = writers._serve

        def one_killed(blocks, running, turn, on_progress):
            os.kill(next(p for p in running.values() if p.name == "larder-writer-0").pid, signal.SIGKILL)
            return real_serve(blocks, running, turn, on_progress)

        monkeypatch.setattr(writers, "_serve", one_killed)
        died = r"writer process larder-writer-0 died \(exit code -9"
    harness.configure(people("parallel"), extra={"defaults": BY_PROCESSES})
    with pytest.raises(SyncFailed, match=died):
        harness.run("parallel")
    monkeypatch.undo()

    report = harness.run("parallel")  # settles what the survivor committed, then writes the rest
    assert report.status == "succeeded"
    for i in (5, 1_234, 2_999):
        assert harness.get("parallel", "id", i) == {"id": i, "name": f"Person {i} v1", "email": f"{i}@x"}


def test_an_error_in_a_writing_process_fails_the_run_with_its_message(warehouse, monkeypatch):
    warehouse.table("people", COLUMNS, [row(i) for i in range(N)])
    warehouse.configure(people("parallel"), extra={"defaults": BY_PROCESSES})
    real = engine.WriteJob

    def unreadable_state(*args):  # writers open a state store that does not exist
        job = real(*args)
        return real(**{**job.__dict__, "state_url": "sqlite:////nonexistent-folder/state.db"})

    monkeypatch.setattr(engine, "WriteJob", unreadable_state)
    with pytest.raises(SyncFailed, match=r"(?s)unable to open database file.*\((in writer|in worker) process \d+\)"):
        warehouse.run("parallel")


def test_writing_processes_come_from_a_process_that_runs_no_thread_of_the_sync(warehouse, monkeypatch):
    warehouse.table("people", COLUMNS, [row(i) for i in range(N)])
    parents: set[int] = set()
    real_serve, real_write = writers._serve, shares.ShareWorkers.write

    def noting_parents(blocks, running, turn, on_progress):
        parents.update(_parent_pid(p.pid) for p in running.values())
        return real_serve(blocks, running, turn, on_progress)

    def noting_share_parents(self, rejected, on_progress):
        parents.update(_parent_pid(p.pid) for p in self._started.values())
        return real_write(self, rejected, on_progress)

    monkeypatch.setattr(writers, "_serve", noting_parents)
    monkeypatch.setattr(shares.ShareWorkers, "write", noting_share_parents)
    warehouse.configure(people("parallel"), extra={"defaults": BY_PROCESSES})
    warehouse.run("parallel")
    assert len(parents) == 1 and os.getpid() not in parents
    assert not _running("larder-writer-") and not _running("larder-share-")


def _on(kind: str, request) -> SyncHarness:
    """The harness on a warehouse of `kind`, closed after the test."""
    h = SyncHarness(request.getfixturevalue("project_factory"), request.getfixturevalue("duckdb_url"),
                    {"main": [request.getfixturevalue("memcached").server]}, db=make_warehouse_db(request, kind))
    request.addfinalizer(h.close)
    return h


def _running(prefix: str) -> list:
    return [p for p in multiprocessing.active_children() if p.name.startswith(prefix)]


def _parent_pid(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as stat:
        return int(stat.read().rsplit(")", 1)[1].split()[1])
