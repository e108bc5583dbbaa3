"""Crash safety: a real sync process SIGKILLed mid-write leaves every record old or new, then converges.

The kill point is made deterministic with the test-only LARDER_TEST_PAUSE_AFTER_COMMIT hook: each
chunk sleeps after its state transaction commits and before its cache writes, which is where a
crash is most dangerous (state ahead of the cache). The test waits until the run's heartbeat shows
two chunks written, then kills the process while the third chunk is committed but not yet cached.
A second variant kills without the pause, wherever the process happens to be in the write phase.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from orchestration.store.state import StateStore
from tests.sync.conftest import SyncHarness, sync_config

N = 1_200
CHUNK = 100
COLUMNS = "id integer, name varchar, email varchar"
SYNC = sync_config(
    indices=["email"], delete="delete",
    fields=[{"column": "id"}, {"column": "name"}, {"column": "email"}],
)


def old_row(pk: int) -> tuple:
    return (pk, f"old {pk}", f"{pk}@old")


def new_row(pk: int) -> tuple | None:
    if pk % 10 == 0:
        return None  # removed
    return (pk, f"new {pk}", f"{pk}@new" if pk % 2 else f"{pk}@old")


OLD = {pk: old_row(pk) for pk in range(N)}
NEW = {pk: row for pk in range(N + 120) if (row := new_row(pk)) is not None}


def record(row: tuple) -> dict:
    return {"id": row[0], "name": row[1], "email": row[2]}


def _start_sync(harness, pause: float) -> subprocess.Popen:
    env = {**os.environ, "LARDER_TEST_PAUSE_AFTER_COMMIT": str(pause)}
    return subprocess.Popen(
        [sys.executable, "-m", "orchestration.cli", "--config", str(harness.project.path), "sync", "people"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )


def _wait_for_written(state: StateStore, at_least: int, process: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = state.last_run("people")
        if run and run.status == "running" and (run.counts or {}).get("written", 0) >= at_least:
            return
        assert process.poll() is None, "the sync finished before it could be killed"
        time.sleep(0.01)
    raise TimeoutError("the run never reported its writes")


def _assert_each_lookup_is_old_or_new(harness) -> None:
    for pk in set(OLD) | set(NEW):
        candidates = [None] + [record(r) for r in (OLD.get(pk), NEW.get(pk)) if r is not None]
        if pk in OLD and pk in NEW:
            candidates.remove(None)  # it exists before and after: it must answer throughout
        assert harness.get("people", "id", pk) in candidates, pk
        for row in (OLD.get(pk), NEW.get(pk)):
            if row is not None:
                served = harness.get("people", "email", row[2])
                assert served is None or served in candidates and served["email"] == row[2], (pk, served)


def _assert_served_is_exactly_new(harness) -> None:
    for pk in set(OLD) | set(NEW):
        expected = record(NEW[pk]) if pk in NEW else None
        assert harness.get("people", "id", pk) == expected, pk
        if pk in OLD and OLD[pk][2] != (NEW.get(pk) or (None, None, None))[2]:
            assert harness.get("people", "email", OLD[pk][2]) is None, pk
        if pk in NEW:
            assert harness.get("people", "email", NEW[pk][2]) == expected, pk


@pytest.mark.parametrize("pause", [0.25, 0.0], ids=["killed-between-commit-and-cache", "killed-anywhere-writing"])
def test_sigkill_mid_write_leaves_old_or_new_records_and_the_next_run_converges(harness, pause):
    harness.table("people", COLUMNS, list(OLD.values()))
    harness.configure(SYNC, extra={"defaults": {"chunk_size": CHUNK}})
    harness.run("people")
    harness.table("people", COLUMNS, list(NEW.values()))
    state = StateStore(harness.project.spec.state.url)

    process = _start_sync(harness, pause)
    _wait_for_written(state, 2 * CHUNK if pause else 1, process)
    if pause:
        time.sleep(pause / 2)  # inside the third chunk's pause: committed, not yet cached
    process.send_signal(signal.SIGKILL)
    assert process.wait(timeout=10) == -signal.SIGKILL

    if pause:
        assert len(state.pending_journal()) == 1  # the crash left committed-but-uncached work
    _assert_each_lookup_is_old_or_new(harness)

    report = harness.run("people")
    assert report.status == "succeeded"
    assert state.pending_journal() == []
    _assert_served_is_exactly_new(harness)
    assert harness.run("people").counts["written"] == 0  # converged: nothing left to do
    state.dispose()


def test_after_a_crash_a_run_limited_to_one_region_leaves_the_other_to_the_next_full_run(
    project_factory, duckdb_url, memcached_pair,
):
    servers = {"us": [memcached_pair[0].server], "eu": [memcached_pair[1].server]}
    harness = SyncHarness(project_factory, duckdb_url, servers)
    harness.table("people", COLUMNS, list(OLD.values()))
    harness.configure(SYNC, extra={"defaults": {"chunk_size": CHUNK}})
    harness.run("people")
    harness.table("people", COLUMNS, list(NEW.values()))
    state = StateStore(harness.project.spec.state.url)
    process = _start_sync(harness, 0.25)
    _wait_for_written(state, 2 * CHUNK, process)
    time.sleep(0.125)  # inside the third chunk's pause: committed, not yet cached in either region
    process.send_signal(signal.SIGKILL)
    assert process.wait(timeout=10) == -signal.SIGKILL
    eu_after_crash = {pk: harness.get("people", "id", pk, region="eu") for pk in set(OLD) | set(NEW)}

    assert harness.run("people", regions=["us"]).status == "succeeded"
    assert state.pending_journal() == []
    for pk in set(OLD) | set(NEW):
        assert harness.get("people", "id", pk, region="us") == (record(NEW[pk]) if pk in NEW else None), pk
        assert harness.get("people", "id", pk, region="eu") == eu_after_crash[pk], pk  # not written

    report = harness.run("people")
    assert report.counts["written"] == 0 and report.counts["caught_up"] > 0
    for region in ("us", "eu"):
        for pk in set(OLD) | set(NEW):
            assert harness.get("people", "id", pk, region=region) == (record(NEW[pk]) if pk in NEW else None), (region, pk)
            if pk in NEW:
                assert harness.get("people", "email", NEW[pk][2], region=region) == record(NEW[pk]), (region, pk)
    assert state.owed_collections("eu") == set()
    state.dispose()
    harness.close()
