"""Crash safety: a real sync process SIGKILLed mid-write leaves every record old or new, then converges.

The sync runs through `tests/sync/faulty_sync.py`, which wraps the state store's chunk write. The
kill point is made deterministic: the wrapper stops the process for good once the third chunk's
state transaction has committed, before its cache writes, which is where a crash is most dangerous
(state ahead of the cache), and says so in a file the test waits for. A second variant kills as
soon as the first chunk has committed, wherever the process then is in the write phase.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from orchestration.store.state import StateStore
from tests.sync.conftest import SyncHarness, sync_config
from tests.sync.faulty_sync import wait_for_chunks

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


def _start_sync(harness, mark: Path, hold_after: int | None) -> subprocess.Popen:
    """A `larder sync people` process that marks each chunk committed, and stops after `hold_after`."""
    hold = ["--hold-after", str(hold_after)] if hold_after is not None else []
    return subprocess.Popen(
        [sys.executable, "-m", "tests.sync.faulty_sync", "--mark", str(mark), *hold,
         "--", "--config", str(harness.project.path), "sync", "people"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )


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


@pytest.mark.parametrize("hold_after", [3, None], ids=["killed-between-commit-and-cache", "killed-anywhere-writing"])
def test_sigkill_mid_write_leaves_old_or_new_records_and_the_next_run_converges(harness, tmp_path, hold_after):
    harness.table("people", COLUMNS, list(OLD.values()))
    harness.configure(SYNC, extra={"defaults": {"chunk_size": CHUNK}})
    harness.run("people")
    harness.table("people", COLUMNS, list(NEW.values()))
    state = StateStore(harness.project.spec.state.url)

    mark = tmp_path / "chunks-committed"
    process = _start_sync(harness, mark, hold_after)
    wait_for_chunks(mark, hold_after or 1, process)  # held: the third chunk committed, not yet cached
    process.send_signal(signal.SIGKILL)
    assert process.wait(timeout=10) == -signal.SIGKILL

    if hold_after:
        assert len(state.pending_journal()) == 1  # the crash left committed-but-uncached work
    _assert_each_lookup_is_old_or_new(harness)

    report = harness.run("people")
    assert report.status == "succeeded"
    assert state.pending_journal() == []
    _assert_served_is_exactly_new(harness)
    assert harness.run("people").counts["written"] == 0  # converged: nothing left to do
    state.dispose()


def test_after_a_crash_a_run_limited_to_one_region_leaves_the_other_to_the_next_full_run(
    project_factory, duckdb_url, memcached_pair, tmp_path,
):
    servers = {"us": [memcached_pair[0].server], "eu": [memcached_pair[1].server]}
    harness = SyncHarness(project_factory, duckdb_url, servers)
    harness.table("people", COLUMNS, list(OLD.values()))
    harness.configure(SYNC, extra={"defaults": {"chunk_size": CHUNK}})
    harness.run("people")
    harness.table("people", COLUMNS, list(NEW.values()))
    state = StateStore(harness.project.spec.state.url)
    mark = tmp_path / "chunks-committed"
    process = _start_sync(harness, mark, hold_after=3)
    wait_for_chunks(mark, 3, process)  # the third chunk committed, not yet cached in either region
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
