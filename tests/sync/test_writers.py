"""Writer processes write a large first sync: what they write is what the sync's own process writes.

Each case syncs one DuckDB model into two collections: once written by the sync's own process
(`write_workers: 1`), once by two writer processes (a threshold of 100 records forces them on a
few thousand). The lookups, the state and the counts must be the same.
"""

from __future__ import annotations

import multiprocessing
import os
import signal

import pytest

from orchestration.store.state import StateStore
from orchestration.sync import SyncFailed, engine, writers
from tests.sync.conftest import record_workers, sync_config

N = 3_000
COLUMNS = "id integer, name varchar, email varchar"
BY_PROCESSES = {"write_workers": 2, "parallel_min_rows": 100, "chunk_size": 200}
IN_PROCESS = {"write_workers": 1, "chunk_size": 200}


def row(i: int, version: int = 1) -> tuple:
    """Some rows are rejected: no id, or an email another row has."""
    pk = None if i % 701 == 0 else i
    email = f"shared{i // 500}@x" if i % 500 in (1, 2) else f"{i}@x"
    return (pk, f"Person {i} v{version}", email)


def people(name: str, **overrides) -> dict:
    return sync_config(name, collection=name, indices=["email"], delete="delete",
                       rejections={"max_share": 1.0, "samples": 100},
                       fields=[{"column": "id"}, {"column": "name"}, {"column": "email"}], **overrides)


@pytest.fixture
def used_processes(monkeypatch) -> list[int]:
    """How many writer processes each run that used them started."""
    return record_workers(monkeypatch, engine, "write_in_processes")


@pytest.fixture(params=["sqlite", "postgres"])
def state_url(request) -> str:
    return request.getfixturevalue(f"{request.param}_url")


def test_a_first_sync_written_by_processes_serves_and_stores_what_one_process_writes(harness, used_processes,
                                                                                    state_url):
    harness.table("people", COLUMNS, [row(i) for i in range(N)])
    harness.configure(people("single"), people("parallel"), state_url=state_url, extra={"defaults": IN_PROCESS})
    single = harness.run("single")
    assert used_processes == []
    harness.configure(people("single"), people("parallel"), state_url=state_url, extra={"defaults": BY_PROCESSES})
    parallel = harness.run("parallel")
    assert used_processes == [2]

    assert parallel.counts == single.counts and parallel.counts["written"] > 2_900
    assert len(parallel.written_preview) == len(single.written_preview) > 0
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


def test_later_runs_after_a_first_sync_by_processes_diff_and_delete_as_usual(harness, used_processes):
    harness.table("people", COLUMNS, [row(i) for i in range(N)])
    harness.configure(people("parallel"), extra={"defaults": BY_PROCESSES})
    harness.run("parallel")
    harness.table("people", COLUMNS, [row(i, version=2 if i % 3 == 0 else 1) for i in range(N) if i % 11])
    report = harness.run("parallel")
    assert used_processes == [2]  # a later run is no first sync: its own process writes it
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
    assert used_processes == [2, 2]
    assert harness.get("people", "id", 5) == {"id": 5, "name": "Person 5 v1", "contact": "5@x"}
    assert harness.get("people", "contact", "5@x") == {"id": 5, "name": "Person 5 v1", "contact": "5@x"}


def test_a_killed_writer_fails_the_run_loudly_and_the_next_run_serves_everything(harness, monkeypatch):
    harness.table("people", COLUMNS, [row(i) for i in range(N)])
    real = writers._serve

    def one_killed(blocks, running, turn, on_progress):  # the kernel's OOM killer, say
        victim = next(p for p in running.values() if p.name == "larder-writer-0")
        os.kill(victim.pid, signal.SIGKILL)
        return real(blocks, running, turn, on_progress)

    monkeypatch.setattr(writers, "_serve", one_killed)
    harness.configure(people("parallel"), extra={"defaults": BY_PROCESSES})
    with pytest.raises(SyncFailed, match=r"writer process larder-writer-0 died \(exit code -9"):
        harness.run("parallel")
    monkeypatch.undo()

    report = harness.run("parallel")  # settles what the survivor committed, then writes the rest
    assert report.status == "succeeded"
    for i in (5, 1_234, 2_999):
        assert harness.get("parallel", "id", i) == {"id": i, "name": f"Person {i} v1", "email": f"{i}@x"}


def test_an_error_in_a_writer_fails_the_run_with_its_message(harness, monkeypatch):
    harness.table("people", COLUMNS, [row(i) for i in range(N)])
    harness.configure(people("parallel"), extra={"defaults": BY_PROCESSES})
    real = engine.WriteJob

    def unreadable_state(*args):  # writers open a state store that does not exist
        job = real(*args)
        return real(**{**job.__dict__, "state_url": "sqlite:////nonexistent-folder/state.db"})

    monkeypatch.setattr(engine, "WriteJob", unreadable_state)
    with pytest.raises(SyncFailed, match=r"(?s)unable to open database file.*\(in writer process \d+\)"):
        harness.run("parallel")


def test_writers_come_from_a_process_that_runs_no_thread_of_the_sync(harness, monkeypatch):
    harness.table("people", COLUMNS, [row(i) for i in range(N)])
    parents: set[int] = set()
    real = writers._serve

    def noting_parents(blocks, running, turn, on_progress):
        parents.update(_parent_pid(p.pid) for p in running.values())
        return real(blocks, running, turn, on_progress)

    monkeypatch.setattr(writers, "_serve", noting_parents)
    harness.configure(people("parallel"), extra={"defaults": BY_PROCESSES})
    harness.run("parallel")
    assert len(parents) == 1 and os.getpid() not in parents
    assert not [p for p in multiprocessing.active_children() if p.name.startswith("larder-writer-")]


def _parent_pid(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as stat:
        return int(stat.read().rsplit(")", 1)[1].split()[1])

