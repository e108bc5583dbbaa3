"""One writer per collection: runs of one collection wait for each other, dead holders are overtaken.

Real processes (`larder sync` subprocesses) race on a real memcached, against SQLite and Postgres
state. A slow run is a sync run through `tests/sync/faulty_sync.py`, which stretches each chunk's
window between its state commit and its cache write, where two unserialized runs would overwrite
each other's composition of a merged record.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

from orchestration.store.state import ChunkTarget, Lease, RecordWrite, StateStore, prepare_write
from orchestration.sync import Services, SyncFailed, rehydrate_region
from orchestration.sync.lease import CollectionLease, LeaseLost
from tests.sync.conftest import sync_config

N = 400
CHUNK = 25
PROFILES = sync_config(
    "profiles", model="select * from profiles", collection="customers", primary_index="user_id",
    fields=[{"column": "user_id"}, {"column": "name"}, {"column": "city", "to": "address.city"}],
)
ENGAGEMENT = sync_config(
    "engagement", model="select * from engagement", collection="customers", primary_index="user_id",
    fields=[{"column": "user_id"}, {"column": "listens", "to": "engagement.listens"},
            {"column": "street", "to": "address.street"}],
)


@pytest.fixture(params=["sqlite", "postgres"])
def state_url(request) -> str:
    return request.getfixturevalue(f"{request.param}_url")


def _models(harness, version: int) -> None:
    harness.table("profiles", "user_id integer, name varchar, city varchar",
                  [(pk, f"name {pk} v{version}", f"city {pk} v{version}") for pk in range(N)])
    harness.table("engagement", "user_id integer, listens integer, street varchar",
                  [(pk, pk * 10 + version, f"street {pk} v{version}") for pk in range(N)])


def _served_is_exactly(harness, profiles: int, engagement: int | None = None) -> None:
    """Every record is the merge of the given versions of the two models."""
    engagement = profiles if engagement is None else engagement
    for pk in range(N):
        expected = {"user_id": pk, "name": f"name {pk} v{profiles}",
                    "address": {"city": f"city {pk} v{profiles}", "street": f"street {pk} v{engagement}"},
                    "engagement": {"listens": pk * 10 + engagement}}
        assert harness.get("customers", "user_id", pk) == expected, pk


def _setup(harness, state_url: str, **defaults) -> StateStore:
    harness.configure(PROFILES, ENGAGEMENT, state_url=state_url,
                      extra={"defaults": {"chunk_size": CHUNK, **defaults}})
    _models(harness, 1)
    harness.run("profiles")
    harness.run("engagement")
    _models(harness, 2)
    return StateStore(state_url)


def _start_sync(harness, name: str, pause: float) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.sync.faulty_sync", "--pause-after-commit", str(pause),
         "--", "--config", str(harness.project.path), "sync", name],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )


def _wait_for_lease(state: StateStore, sync_name: str, process: subprocess.Popen, *, written: int = 0) -> Lease:
    """The lease of the customers collection once the process's run holds it and has written `written` records."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        lease, run = state.lease_of("customers"), state.last_run(sync_name)
        if lease and run and lease.run_id == run.id and (run.counts or {}).get("written", 0) >= written:
            return lease
        assert process.poll() is None, process.stderr.read().decode()
        time.sleep(0.01)
    raise TimeoutError(f"the run of {sync_name!r} never held the lease")


def _wait_for_commit_before_cache_write(state: StateStore, sync_name: str, process: subprocess.Popen) -> Lease:
    """The lease of the customers collection once the process's run has committed a chunk to state
    and not yet written it to the cache (its journal entry is pending): with a long pause after each
    commit, the process stays there until killed."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        lease, run = state.lease_of("customers"), state.last_run(sync_name)
        if lease and run and lease.run_id == run.id and state.pending_journal(sync_name):
            return lease
        assert process.poll() is None, process.stderr.read().decode()
        time.sleep(0.01)
    raise TimeoutError(f"the run of {sync_name!r} never committed a chunk")


def _finished(process: subprocess.Popen) -> None:
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 0, stderr.decode()


@pytest.mark.slow  # a `larder sync` subprocess
def test_two_processes_syncing_one_collection_at_once_serve_exactly_the_merged_model(harness, state_url):
    state = _setup(harness, state_url)
    # profiles is slow (it sleeps between each chunk's commit and its cache write) and engagement
    # quick, started once profiles writes: unserialized, engagement would overtake profiles inside
    # a chunk that profiles composed with engagement's old fields, and profiles' late write would win.
    slow = _start_sync(harness, "profiles", pause=0.2)
    _wait_for_lease(state, "profiles", slow, written=CHUNK)
    for process in (_start_sync(harness, "engagement", pause=0), slow):
        _finished(process)
    _served_is_exactly(harness, 2)
    runs = [state.last_run(name) for name in ("profiles", "engagement")]
    assert [run.status for run in runs] == ["succeeded", "succeeded"]
    first, second = sorted(runs, key=lambda run: run.finished_at)
    assert second.counts["written"] == N and first.counts["written"] == N
    assert state.lease_of("customers") is None
    state.dispose()


@pytest.mark.slow  # a `larder sync` subprocess
def test_a_second_run_of_the_collection_waits_for_the_first_to_finish(harness, state_url):
    state = _setup(harness, state_url)
    process = _start_sync(harness, "profiles", pause=0.05)
    holder = _wait_for_lease(state, "profiles", process)
    phases: list[tuple[str, float]] = []
    report = harness.run("engagement", progress=lambda phase, _counts: phases.append((phase, time.time())))
    _finished(process)
    assert report.status == "succeeded"
    assert phases[0][0] == "wait"
    first_scan = next(at for phase, at in phases if phase == "scan")
    profiles_run = state.last_run("profiles")
    assert profiles_run.id == holder.run_id
    assert profiles_run.finished_at <= first_scan  # it began reading only once the first had finished
    _served_is_exactly(harness, 2)
    state.dispose()


def test_a_run_that_cannot_get_the_lease_fails_naming_the_run_holding_it(harness, sqlite_url):
    state = _setup(harness, sqlite_url, lease_wait_seconds=0.3)
    held = Lease("customers", "f" * 32, "run 41 of sync 'profiles'", 41, "another-host", 1, time.time() + 60)
    assert state.acquire_lease(held)
    with pytest.raises(SyncFailed, match=r"run 41 of sync 'profiles' \(host another-host, pid 1") as failure:
        harness.run("engagement")
    assert failure.value.report.status == "failed"
    assert state.last_run("engagement").status == "failed"
    assert harness.get("customers", "user_id", 1)["engagement"] == {"listens": 11}  # nothing written
    assert state.lease_of("customers") == held
    state.dispose()


def test_a_lease_from_another_host_that_expires_is_taken_over(harness, sqlite_url):
    state = _setup(harness, sqlite_url, lease_wait_seconds=30)
    assert state.acquire_lease(Lease("customers", "f" * 32, "run 41 of sync 'profiles'", 41, "another-host", 1,
                                     time.time() + 1.0))
    phases: list[str] = []
    report = harness.run("engagement", progress=lambda phase, _counts: phases.append(phase))
    assert report.status == "succeeded" and phases[0] == "wait"
    assert harness.get("customers", "user_id", 1)["engagement"] == {"listens": 12}
    state.dispose()


@pytest.mark.slow  # a `larder sync` subprocess
def test_the_lease_of_a_sigkilled_run_is_taken_over_and_the_next_run_converges(harness, sqlite_url):
    # The killed process lived on this host, so its lease is taken at once, not after LEASE_SECONDS.
    state = _setup(harness, sqlite_url, lease_wait_seconds=5)
    process = _start_sync(harness, "profiles", pause=600)  # held after its first commit until killed
    try:
        holder = _wait_for_commit_before_cache_write(state, "profiles", process)
    finally:
        process.send_signal(signal.SIGKILL)
    assert process.wait(timeout=10) == -signal.SIGKILL
    assert [entry.run_id for entry in state.pending_journal("profiles")] == [holder.run_id]  # killed mid-chunk
    assert state.lease_of("customers").token == holder.token  # the dead run never released it
    taker = harness.run("engagement")
    assert taker.status == "succeeded"
    killed = state.recent_runs("profiles", limit=1)[0]
    assert killed.id == holder.run_id and killed.status == "failed"
    assert killed.finished_at is not None
    assert f"run {taker.run_id} of sync 'engagement' took over its lease" in killed.error
    assert "no longer exists" in killed.error
    assert harness.run("profiles").status == "succeeded"
    _served_is_exactly(harness, 2)
    state.dispose()


def test_a_run_whose_expired_lease_is_taken_over_is_marked_failed(harness, state_url):
    state = _setup(harness, state_url, lease_wait_seconds=30)
    stalled = state.start_run("profiles", full_resync=False, regions=["main"])
    assert state.acquire_lease(Lease("customers", "f" * 32, f"run {stalled} of sync 'profiles'", stalled,
                                     "another-host", 1, time.time() + 0.5))
    taker = harness.run("engagement")
    run = state.recent_runs("profiles", limit=1)[0]
    assert run.id == stalled and run.status == "failed"
    assert f"run {taker.run_id} of sync 'engagement' took over its lease" in run.error
    assert "expired" in run.error
    state.dispose()


@pytest.mark.slow  # a `larder sync` subprocess
def test_rehydrate_waits_for_a_sync_writing_the_collection(harness, sqlite_url, memcached):
    state = _setup(harness, sqlite_url)
    process = _start_sync(harness, "profiles", pause=0.05)
    _wait_for_lease(state, "profiles", process)
    memcached.flush()
    services = Services(harness.project)
    try:
        totals = rehydrate_region(services, "main")
    finally:
        services.close()
    assert state.last_run("profiles").status == "succeeded"  # it had finished before the rewrite began
    _finished(process)
    assert totals["records"] == N
    _served_is_exactly(harness, profiles=2, engagement=1)
    state.dispose()


def test_a_lease_is_held_by_one_holder_until_released_or_expired(state_url):
    state = StateStore(state_url)
    state.create_all()
    first = CollectionLease(state, "customers", "first", ttl=60)
    second = CollectionLease(state, "customers", "second", ttl=60)
    assert first.try_acquire()
    assert not second.try_acquire()
    first.release()
    assert second.try_acquire()
    second.release()
    state.dispose()


def test_a_holder_whose_lease_expired_and_was_taken_cannot_renew_or_commit(state_url):
    state = StateStore(state_url)
    state.create_all()
    stalled = CollectionLease(state, "customers", "stalled", ttl=0.05)
    assert stalled.try_acquire()
    time.sleep(0.1)
    taker = CollectionLease(state, "customers", "taker", ttl=60)
    assert taker.try_acquire()
    with pytest.raises(LeaseLost, match="stalled lost its lease on collection 'customers'"):
        stalled.renew()
    with pytest.raises(LeaseLost):  # the renewal fences the chunk's writes
        state.commit_chunk(prepare_write(ChunkTarget(1, "profiles", "customers", ("profiles",)),
                                         [RecordWrite("1", b"{}", 0, [], is_new=True)]), fence=stalled.renew)
    assert state.snapshot("profiles") == {}
    taker.renew()
    state.dispose()
