"""Worker processes read and map a large model's rows: what they write is what one process writes.

Each case syncs the same DuckDB model twice, into two collections: once in the sync's own process
(`sync_workers: 1`), once with two workers (a threshold of 100 rows forces them on a few thousand).
Writer processes are kept out (`write_workers: 1`), but in the cases of a first sync in shares
(workers that map and also write, see shares.py), checked here on the same rows.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
from contextlib import contextmanager

import pytest

from orchestration.store.state import StateStore
from orchestration.sync import SyncFailed, engine
from tests.sync.conftest import record_workers, sync_config

N = 3_000
COLUMNS = "id integer, name varchar, email varchar, score varchar"
PARALLEL = {"sync_workers": 2, "write_workers": 1, "parallel_min_rows": 100, "chunk_size": 200}
ONE_PROCESS = {"sync_workers": 1, "write_workers": 1, "chunk_size": 200}
IN_SHARES = {"sync_workers": 1, "write_workers": 2, "parallel_min_rows": 100, "chunk_size": 200}


def row(i: int, version: int = 1) -> tuple:
    """Rejected rows among them: no id, a shared email, a score that is not a number, too long a record."""
    pk = None if i % 701 == 0 else i
    email = f"shared{i // 500}@x" if i % 500 in (1, 2) else f"{i}@x"
    score = "n/a" if i % 97 == 0 else str(i * version)
    name = "L" * 400 if i % 389 == 0 else f"Person {i} v{version}"
    return (pk, name, email, score)


def people(name: str) -> dict:
    return sync_config(
        name, collection=name, indices=["email"], delete="delete", max_record_bytes=300,
        rejections={"max_share": 1.0, "samples": 1_000},
        fields=[{"column": "id"}, {"column": "name"}, {"column": "email"}, {"column": "score", "type": "number"},
                {"to": "greeting", "liquid": "Hi {{ name | upcase }}"}],
    )


@pytest.fixture
def used_workers(monkeypatch) -> list[int]:
    """How many workers each run that used them started."""
    return record_workers(monkeypatch, engine, "mapped_in_workers")


def run_both(harness, used_workers, **options):
    """Sync `single` in one process and `parallel` with workers; both reports."""
    harness.configure(people("single"), people("parallel"), extra={"defaults": ONE_PROCESS})
    single = harness.run("single", **options)
    assert used_workers == []
    harness.configure(people("single"), people("parallel"), extra={"defaults": PARALLEL})
    parallel = harness.run("parallel", **options)
    assert used_workers == [2]
    used_workers.clear()
    return single, parallel


def assert_same_results(harness, single, parallel, pks) -> None:
    assert single.counts == parallel.counts
    assert _samples(single) == _samples(parallel)
    for pk in pks:
        assert harness.get("single", "id", pk) == harness.get("parallel", "id", pk)
        email = f"{pk}@x"
        assert harness.get("single", "email", email) == harness.get("parallel", "email", email)
    state = StateStore(harness.project.spec.state.url)
    try:
        assert state.snapshot("single").keys() == state.snapshot("parallel").keys()  # (fingerprints are salted by sync)
        assert state.sync_fields_of("single", [str(pk) for pk in pks]) == \
            state.sync_fields_of("parallel", [str(pk) for pk in pks])
    finally:
        state.dispose()


def _samples(report) -> list[tuple]:
    """Rejection samples, in an order that does not depend on which process read a row first."""
    return sorted((s["pk"] or "", s["reason"].split(" (also on")[0], sorted(s["row"].items())) for s in report.rejection_samples)


def test_a_first_sync_mapped_by_workers_writes_what_one_process_writes(harness, used_workers):
    harness.table("people", COLUMNS, [row(i) for i in range(N)])
    single, parallel = run_both(harness, used_workers)
    assert parallel.counts["added"] > 2_800 and parallel.counts["rejected"] > 40
    assert {s["reason"].split(" ")[0] for s in parallel.rejection_samples} >= {"primary", "duplicate", "'n/a'", "record"}
    assert harness.get("parallel", "id", 5) == {"id": 5, "name": "Person 5 v1", "email": "5@x", "score": 5,
                                               "greeting": "Hi PERSON 5 V1"}
    assert_same_results(harness, single, parallel, range(N))


def test_a_first_sync_in_shares_maps_rejects_and_writes_what_one_process_does(harness, monkeypatch):
    in_shares = record_workers(monkeypatch, engine, "ShareWorkers")
    harness.table("people", COLUMNS, [row(i) for i in range(N)])
    harness.configure(people("single"), people("parallel"), extra={"defaults": ONE_PROCESS})
    single = harness.run("single")
    harness.configure(people("single"), people("parallel"), extra={"defaults": IN_SHARES})
    parallel = harness.run("parallel")
    assert in_shares == [2]
    assert parallel.counts["added"] > 2_800 and parallel.counts["rejected"] > 40
    assert_same_results(harness, single, parallel, range(N))


def test_an_error_in_a_share_worker_fails_the_run_with_its_message_and_writes_nothing(harness, monkeypatch):
    in_shares = record_workers(monkeypatch, engine, "ShareWorkers")
    harness.table("people", COLUMNS, [row(i) for i in range(N)])
    failing = people("parallel")
    failing["model"] = {"sql": "select id, name, email, case when id = 2500 then error('model exploded on row 2500') "
                               "else score end as score from people"}
    harness.configure(failing, extra={"defaults": IN_SHARES})
    with pytest.raises(SyncFailed, match=r"model exploded on row 2500.*\(in worker process \d+\)"):
        harness.run("parallel")
    assert in_shares == [2]
    assert harness.get("parallel", "id", 5) is None


def test_a_full_resync_by_workers_counts_changes_and_removals_as_one_process_does(harness, used_workers):
    harness.table("people", COLUMNS, [row(i) for i in range(N)])
    run_both(harness, used_workers)
    harness.table("people", COLUMNS, [row(i, version=2 if i % 3 == 0 else 1) for i in range(N) if i % 11])
    single, parallel = run_both(harness, used_workers, full_resync=True)
    assert parallel.counts["changed"] > 500 and parallel.counts["rewritten"] > 1_000
    assert parallel.counts["removed"] > 200
    assert harness.get("parallel", "id", 11) is None
    assert_same_results(harness, single, parallel, range(N))


def test_a_later_sync_of_few_changes_stays_in_one_process(harness, used_workers):
    harness.table("people", COLUMNS, [row(i) for i in range(N)])
    run_both(harness, used_workers)
    harness.configure(people("single"), people("parallel"), extra={"defaults": PARALLEL})
    assert harness.run("parallel").counts["unchanged"] > 2_800
    assert used_workers == []


def test_an_error_in_a_worker_fails_the_run_with_its_message_and_writes_nothing(harness, used_workers):
    harness.table("people", COLUMNS, [row(i) for i in range(N)])
    failing = people("parallel")  # the model fails on one row, which only a worker reads
    failing["model"] = {"sql": "select id, name, email, case when id = 2500 then error('model exploded on row 2500') "
                               "else score end as score from people"}
    harness.configure(failing, extra={"defaults": PARALLEL})
    with pytest.raises(SyncFailed, match="model exploded on row 2500") as error:
        harness.run("parallel")
    assert error.value.report.status == "failed" and used_workers == [2]
    assert harness.get("parallel", "id", 5) is None


def test_a_killed_worker_fails_the_run_loudly(harness, monkeypatch):
    harness.table("people", COLUMNS, [row(i) for i in range(N)])
    real = engine.mapped_in_workers

    @contextmanager
    def one_killed(delta, mapper, **options):  # the kernel's OOM killer, say
        with real(delta, mapper, **options) as mapped:
            # Before the scan reads anything: its part does not fit in the pipe, so it cannot be done yet.
            victim = next(p for p in multiprocessing.active_children() if p.name == "larder-mapping-0")
            os.kill(victim.pid, signal.SIGKILL)
            yield mapped

    monkeypatch.setattr(engine, "mapped_in_workers", one_killed)
    harness.configure(people("parallel"), extra={"defaults": PARALLEL})
    with pytest.raises(SyncFailed, match=r"mapping worker larder-mapping-0 died \(exit code -9"):
        harness.run("parallel")
    assert harness.get("parallel", "id", 5) is None


def test_workers_come_from_a_process_that_runs_no_thread_of_the_sync(harness, monkeypatch):
    """Forked from the sync's process, a worker would inherit locks its other threads hold."""
    harness.table("people", COLUMNS, [row(i) for i in range(N)])
    parents: set[int] = set()
    real = engine.mapped_in_workers

    @contextmanager
    def noting_parents(delta, mapper, **options):
        with real(delta, mapper, **options) as mapped:
            for process in multiprocessing.active_children():
                if process.name.startswith("larder-mapping-"):
                    parents.add(_parent_pid(process.pid))
            yield mapped

    monkeypatch.setattr(engine, "mapped_in_workers", noting_parents)
    harness.configure(people("parallel"), extra={"defaults": PARALLEL})
    assert harness.run("parallel").counts["added"] > 2_800
    assert len(parents) == 1 and os.getpid() not in parents


def _parent_pid(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as stat:
        return int(stat.read().rsplit(")", 1)[1].split()[1])
