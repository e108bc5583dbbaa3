"""Regions: a run limited to some regions never writes the others, and never leaves them stale.

Two real memcached processes are the regions `us` and `eu`; runs go through `larder sync` (the
CLI) or `run_sync`, rehydrates through `larder rehydrate`.
"""

from __future__ import annotations

import pytest

from orchestration.cli import main
from orchestration.store.keys import record_key
from orchestration.store.state import ChunkTarget, IndexKey, RecordWrite, StateStore, prepare_write
from tests.sync.conftest import SyncHarness, sync_config

COLUMNS = "id integer, name varchar, email varchar"
PEOPLE = sync_config(indices=["email"], delete="delete",
                     fields=[{"column": "id"}, {"column": "name"}, {"column": "email"}])


@pytest.fixture
def regions(project_factory, duckdb_url, memcached_pair):
    us, eu = memcached_pair
    harness = SyncHarness(project_factory, duckdb_url, {"us": [us.server], "eu": [eu.server]})
    yield harness
    harness.close()


@pytest.fixture(params=["sqlite", "postgres"])
def state_url(request) -> str:
    return request.getfixturevalue(f"{request.param}_url")


def larder(harness: SyncHarness, *args: str) -> int:
    return main(["--config", str(harness.project.path), *args])


def person(pk: int, name: str, email: str | None = None) -> dict:
    return {"id": pk, "name": name, "email": email or f"{pk}@x"}


def test_a_full_run_after_a_run_limited_to_one_region_writes_the_region_left_out(regions, capsys):
    regions.table("people", COLUMNS, [(1, "Ann", "1@x"), (2, "Bob", "2@x")])
    regions.configure(PEOPLE)
    assert larder(regions, "sync", "people") == 0
    regions.table("people", COLUMNS, [(1, "Ann v2", "1@x"), (2, "Bob", "2@x")])

    assert larder(regions, "sync", "people", "--region", "us") == 0
    assert regions.get("people", "id", 1, region="us") == person(1, "Ann v2")
    assert regions.get("people", "id", 1, region="eu") == person(1, "Ann")  # left out: not written

    capsys.readouterr()
    assert larder(regions, "sync", "people") == 0  # nothing changed in the model since
    out = capsys.readouterr()
    assert "people catch up: caught_up 2" in out.err  # id and email of record 1, owed to eu
    assert "unchanged 2" in out.out and "written 0" in out.out
    for region in ("us", "eu"):
        assert regions.get("people", "id", 1, region=region) == person(1, "Ann v2")
        assert regions.get("people", "email", "1@x", region=region) == person(1, "Ann v2")


def test_removals_and_moved_index_values_reach_the_region_left_out(regions, state_url):
    regions.table("people", COLUMNS, [(1, "Ann", "1@x"), (2, "Bob", "2@x")])
    regions.configure(PEOPLE, state_url=state_url)
    regions.run("people")
    regions.table("people", COLUMNS, [(2, "Bob", "bob@new")])  # 1 deleted, 2's email moved

    regions.run("people", regions=["us"])
    assert regions.get("people", "id", 1, region="us") is None
    assert regions.get("people", "id", 1, region="eu") == person(1, "Ann")
    assert regions.get("people", "email", "2@x", region="eu") == person(2, "Bob")

    regions.run("people", regions=["eu"])
    for region in ("us", "eu"):
        assert regions.get("people", "id", 1, region=region) is None
        assert regions.get("people", "email", "1@x", region=region) is None
        assert regions.get("people", "email", "2@x", region=region) is None
        assert regions.get("people", "email", "bob@new", region=region) == person(2, "Bob", "bob@new")


def test_a_run_of_another_sync_of_the_collection_writes_what_the_region_is_owed(regions):
    profiles = sync_config("profiles", model="select * from profiles", collection="people",
                           fields=[{"column": "id"}, {"column": "name"}])
    scores = sync_config("scores", model="select * from scores", collection="people",
                         fields=[{"column": "id"}, {"column": "score"}])
    regions.table("profiles", "id integer, name varchar", [(1, "Ann")])
    regions.table("scores", "id integer, score integer", [(1, 10)])
    regions.configure(profiles, scores)
    regions.run("profiles")
    regions.run("scores")
    regions.table("profiles", "id integer, name varchar", [(1, "Ann v2")])
    regions.run("profiles", regions=["us"])
    assert regions.get("people", "id", 1, region="eu") == {"id": 1, "name": "Ann", "score": 10}

    regions.run("scores")  # no change of its own, but it covers eu
    assert regions.get("people", "id", 1, region="eu") == {"id": 1, "name": "Ann v2", "score": 10}


def test_rehydrating_the_region_left_out_settles_what_it_was_owed(regions, state_url):
    regions.table("people", COLUMNS, [(1, "Ann", "1@x"), (2, "Bob", "2@x")])
    regions.configure(PEOPLE, state_url=state_url)
    regions.run("people")
    regions.table("people", COLUMNS, [(1, "Ann v2", "1@x")])
    regions.run("people", regions=["us"])
    state = StateStore(regions.project.spec.state.url)
    assert state.owed_collections("eu") == {"people"}

    assert larder(regions, "rehydrate", "--region", "eu") == 0
    assert regions.get("people", "id", 1, region="eu") == person(1, "Ann v2")
    assert regions.get("people", "id", 2, region="eu") is None  # not only rewritten: the deleted key is gone
    assert regions.get("people", "email", "2@x", region="eu") is None
    assert state.owed_collections("eu") == set()
    state.dispose()


def test_a_disabled_region_is_not_written_and_catches_up_when_enabled_again(regions, memcached_pair, state_url):
    us, eu = memcached_pair
    regions.table("people", COLUMNS, [(1, "Ann", "1@x"), (2, "Bob", "2@x")])
    regions.configure(PEOPLE, state_url=state_url)
    regions.run("people")

    def configure(eu_enabled: bool) -> None:
        regions.project = regions.project_factory(
            [PEOPLE], state_url=state_url, extra={"regions": {"us": {"servers": [us.server]},
                                         "eu": {"servers": [eu.server], "enabled": eu_enabled}}},
        )

    configure(eu_enabled=False)
    regions.table("people", COLUMNS, [(1, "Ann v2", "1@x")])
    assert regions.run("people").regions == ("us",)
    assert regions.get("people", "id", 1, region="eu") == person(1, "Ann")

    configure(eu_enabled=True)
    report = regions.run("people")
    assert report.counts["unchanged"] == 1 and report.counts["written"] == 0
    assert regions.get("people", "id", 1, region="eu") == person(1, "Ann v2")
    assert regions.get("people", "id", 2, region="eu") is None


def test_crashed_work_replayed_by_a_limited_run_is_written_only_to_its_regions(regions):
    regions.table("people", COLUMNS, [(1, "Ann", "1@x")])
    regions.configure(PEOPLE)
    run_id = regions.run("people").run_id
    state = StateStore(regions.project.spec.state.url)
    # a run of both regions that died after this commit, before any cache write (no cache_written)
    state.commit_chunk(prepare_write(ChunkTarget(run_id, "people", "people", ("people",)), [
        RecordWrite("1", b'{"id":1,"name":"Ann v2","email":"1@x"}', 0,
                    [IndexKey(record_key("people", "id", "1"), ""),
                     IndexKey(record_key("people", "email", "1@x"), "people")], is_new=False),
    ]))

    regions.run("people", regions=["us"])
    assert regions.get("people", "id", 1, region="us") == person(1, "Ann")  # replayed, then the model wins
    assert regions.get("people", "id", 1, region="eu") == person(1, "Ann")  # still the old version: untouched
    assert state.pending_journal() == []

    regions.table("people", COLUMNS, [(1, "Ann v3", "1@x")])
    regions.run("people", regions=["us"])
    regions.run("people", regions=["eu"])
    for region in ("us", "eu"):
        assert regions.get("people", "id", 1, region=region) == person(1, "Ann v3")
    assert state.owed_collections("eu") == set() and state.owed_collections("us") == set()
    state.dispose()


def test_a_no_change_run_of_every_region_leaves_nothing_owed(regions):
    regions.table("people", COLUMNS, [(i, f"P{i}", f"{i}@x") for i in range(50)])
    regions.configure(PEOPLE)
    regions.run("people")
    regions.run("people")
    state = StateStore(regions.project.spec.state.url)
    assert state.owed_collections("us") == set() and state.owed_collections("eu") == set()
    key = record_key("people", "id", "1")
    assert regions.cache("us").get(key) == regions.cache("eu").get(key)
    state.dispose()
