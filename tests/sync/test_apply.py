"""Applying runs: indices, merged collections, delete behaviours, regions, journal replay."""

from __future__ import annotations

from orchestration.store.keys import record_key
from orchestration.store.state import ChunkTarget, IndexKey, RecordWrite, RunStatus, StateStore, prepare_write
from orchestration.store.state.journal import Journal
from orchestration.sync import Services
from orchestration.sync.apply import settle_collection
from tests.sync.conftest import SyncHarness, sync_config

PEOPLE = "id integer, name varchar, email varchar, phone varchar"
INDEXED = sync_config(
    indices=["email", "phone"],
    fields=[{"column": "id"}, {"column": "name"}, {"column": "email"}, {"column": "phone"}],
)


def test_lookup_by_any_index_returns_the_same_record(harness):
    harness.table("people", PEOPLE, [(1, "Ann", "ann@x.com", "+47 1"), (2, "Bob", "bob@x.com", None)])
    harness.configure(INDEXED)
    harness.run("people")
    ann = {"id": 1, "name": "Ann", "email": "ann@x.com", "phone": "+47 1"}
    assert harness.get("people", "id", 1) == ann
    assert harness.get("people", "email", "ann@x.com") == ann
    assert harness.get("people", "phone", "+47 1") == ann
    assert harness.raw("people", "id", 1) == harness.raw("people", "email", "ann@x.com")
    # a null extra index value simply does not index the record
    assert harness.get("people", "email", "bob@x.com")["phone"] is None


def test_changed_index_value_stops_resolving(harness):
    harness.table("people", PEOPLE, [(1, "Ann", "ann@x.com", "+47 1")])
    harness.configure(INDEXED)
    harness.run("people")
    harness.table("people", PEOPLE, [(1, "Ann", "ann@new.com", None)])
    harness.run("people")
    assert harness.get("people", "email", "ann@x.com") is None
    assert harness.get("people", "phone", "+47 1") is None
    assert harness.get("people", "email", "ann@new.com")["email"] == "ann@new.com"


def test_index_value_moving_between_records_in_one_run_resolves_to_its_new_owner(harness):
    harness.table("people", PEOPLE, [(1, "Ann", "shared@x", None), (2, "Bob", "bob@x", None)])
    harness.configure(INDEXED, extra={"defaults": {"chunk_size": 1}})
    harness.run("people")
    harness.table("people", PEOPLE, [(2, "Bob", "shared@x", None), (1, "Ann", "ann@x", None)])
    harness.run("people")
    assert harness.get("people", "email", "shared@x")["id"] == 2
    assert harness.get("people", "email", "ann@x")["id"] == 1
    assert harness.get("people", "email", "bob@x") is None


PROFILES = sync_config(
    "profiles", model="select * from profiles", collection="customers", primary_index="user_id",
    indices=["email"], delete="delete",
    fields=[{"column": "user_id"}, {"column": "email"}, {"column": "name"}, {"column": "city", "to": "address.city"}],
)
ENGAGEMENT = sync_config(
    "engagement", model="select * from engagement", collection="customers", primary_index="user_id",
    delete="clear",
    fields=[{"column": "user_id"}, {"column": "listens", "to": "engagement.listens"},
            {"column": "street", "to": "address.street"}],
)


def _merged(harness, profiles=None, engagement=None):
    harness.table("profiles", "user_id integer, email varchar, name varchar, city varchar",
                  profiles if profiles is not None else [(1, "a@x", "Ann", "Oslo"), (2, "b@x", "Bob", "Rome")])
    harness.table("engagement", "user_id integer, listens integer, street varchar",
                  engagement if engagement is not None else [(1, 10, "Main St"), (2, 20, "Via Roma")])


def test_merged_collection_record_is_the_union_of_each_syncs_fields(harness):
    _merged(harness)
    harness.configure(PROFILES, ENGAGEMENT)
    harness.run("profiles")
    harness.run("engagement")
    expected = {"user_id": 1, "email": "a@x", "name": "Ann", "address": {"city": "Oslo", "street": "Main St"},
                "engagement": {"listens": 10}}
    assert harness.get("customers", "user_id", 1) == expected
    assert harness.get("customers", "email", "a@x") == expected


def test_each_merged_sync_updates_only_its_own_fields(harness):
    _merged(harness)
    harness.configure(PROFILES, ENGAGEMENT)
    harness.run("profiles")
    harness.run("engagement")
    _merged(harness, profiles=[(1, "a2@x", "Ann", "Bergen"), (2, "b@x", "Bob", "Rome")],
            engagement=[(1, 11, "Main St"), (2, 20, "Via Roma")])
    harness.run("engagement")
    assert harness.get("customers", "user_id", 1) == {
        "user_id": 1, "email": "a@x", "name": "Ann", "address": {"city": "Oslo", "street": "Main St"},
        "engagement": {"listens": 11},
    }
    harness.run("profiles")
    assert harness.get("customers", "email", "a2@x")["address"] == {"city": "Bergen", "street": "Main St"}
    assert harness.get("customers", "email", "a@x") is None


def test_clear_removes_only_the_syncs_fields_and_the_record_goes_when_none_remain(harness):
    _merged(harness)
    harness.configure(PROFILES, ENGAGEMENT)
    harness.run("engagement")
    harness.run("profiles")
    _merged(harness, engagement=[(2, 20, "Via Roma")])
    report = harness.run("engagement")
    assert report.counts["removed"] == 1
    assert harness.get("customers", "email", "a@x") == {
        "user_id": 1, "email": "a@x", "name": "Ann", "address": {"city": "Oslo"},
    }
    # a record only this sync wrote disappears when its fields are cleared
    harness.table("profiles", "user_id integer, email varchar, name varchar, city varchar", [])
    harness.table("engagement", "user_id integer, listens integer, street varchar", [(3, 30, "Elm St")])
    harness.run("engagement")
    assert harness.get("customers", "user_id", 3) is not None
    harness.table("engagement", "user_id integer, listens integer, street varchar", [])
    harness.run("engagement")
    assert harness.get("customers", "user_id", 3) is None


def test_delete_removes_the_whole_record_on_every_index(harness):
    _merged(harness)
    harness.configure(PROFILES, ENGAGEMENT)
    harness.run("profiles")
    harness.run("engagement")
    _merged(harness, profiles=[(2, "b@x", "Bob", "Rome")])
    assert harness.run("profiles").counts["removed"] == 1
    assert harness.get("customers", "user_id", 1) is None
    assert harness.get("customers", "email", "a@x") is None
    # the other sync still holds its fields: its next run changes nothing, and the record stays deleted
    assert harness.run("engagement").counts["unchanged"] == 2
    assert harness.get("customers", "user_id", 1) is None


def test_keep_leaves_records_whose_rows_left_the_model(harness):
    harness.table("people", PEOPLE, [(1, "Ann", "a@x", None), (2, "Bob", "b@x", None)])
    harness.configure(sync_config(delete="keep"))
    harness.run("people")
    harness.table("people", PEOPLE, [(2, "Bob", "b@x", None)])
    report = harness.run("people")
    assert report.counts["removed"] == 0 and report.counts["kept"] == 1
    assert harness.get("people", "id", 1) == {"id": 1, "name": "Ann"}


def test_sync_writes_every_enabled_region_and_a_pool_of_two_servers(project_factory, duckdb_url, memcached_pair, memcached):
    regions = {"pool": [m.server for m in memcached_pair], "single": [memcached.server]}
    harness = SyncHarness(project_factory, duckdb_url, regions)
    rows = [(i, f"P{i}", f"{i}@x", None) for i in range(200)]
    harness.table("people", PEOPLE, rows)
    harness.configure(sync_config(indices=["email"], fields=[{"column": "id"}, {"column": "name"}, {"column": "email"}]))
    report = harness.run("people")
    assert report.regions == ("pool", "single")
    for region in regions:
        for i in range(200):
            assert harness.get("people", "email", f"{i}@x", region=region)["id"] == i
    per_server = [_item_count(m.server) for m in memcached_pair]
    assert sum(per_server) == 400 and min(per_server) > 100  # both servers hold a share of the keys
    harness.close()


def test_disabled_region_and_per_sync_regions_are_respected(project_factory, duckdb_url, memcached_pair):
    a, b = memcached_pair
    harness = SyncHarness(project_factory, duckdb_url, {"a": [a.server], "b": [b.server]})
    harness.table("people", PEOPLE, [(1, "Ann", "a@x", None)])
    harness.configure(sync_config(regions=["b"]))
    assert harness.run("people").regions == ("b",)
    assert harness.get("people", "id", 1, region="a") is None
    assert harness.get("people", "id", 1, region="b") is not None
    harness.project = harness.project_factory(
        [sync_config()], regions=None,
        extra={"regions": {"a": {"servers": [a.server]}, "b": {"servers": [b.server], "enabled": False}}},
    )
    assert harness.run("people").regions == ("a",)
    harness.close()


def _item_count(server: str) -> int:
    from pymemcache.client.base import Client

    host, port = server.split(":")
    client = Client((host, int(port)))
    try:
        return int(client.stats()[b"curr_items"])
    finally:
        client.close()


def test_postgres_state_store_backs_a_full_lifecycle(harness, postgres_url):
    harness.table("people", PEOPLE, [(1, "Ann", "a@x", None), (2, "Bob", "b@x", None)])
    harness.configure(INDEXED, state_url=postgres_url)
    assert harness.run("people").counts["added"] == 2
    harness.table("people", PEOPLE, [(1, "Ann", "a2@x", None)])
    report = harness.run("people")
    assert report.counts["changed"] == 1 and report.counts["removed"] == 1
    assert harness.get("people", "email", "a2@x")["id"] == 1
    assert harness.get("people", "email", "a@x") is None
    assert harness.get("people", "id", 2) is None
    runs = StateStore(postgres_url).recent_runs("people")
    assert [r.status for r in runs] == [RunStatus.succeeded, RunStatus.succeeded]
    assert runs[0].counts["removed"] == 1


def test_progress_reports_rows_read_written_and_rejected_as_the_run_goes(harness):
    harness.table("people", PEOPLE, [(i, "P", f"{i}@x", None) for i in range(25)] + [(None, "x", "x", None)])
    harness.configure(sync_config(), extra={"defaults": {"chunk_size": 10}})
    seen = []
    from orchestration.sync import run_sync

    services = Services(harness.project)
    try:
        run_sync(services, "people", progress=lambda phase, counts: seen.append((phase, dict(counts))))
    finally:
        services.close()
    scans = [c for phase, c in seen if phase == "scan"]
    writes = [c for phase, c in seen if phase == "write"]
    assert [c["rows_read"] for c in scans] == [10, 20, 26]
    assert scans[-1]["rejected"] == 1
    assert [c["written"] for c in writes] == [10, 20, 25]


def test_journal_left_by_a_crash_is_replayed_by_the_next_run(harness):
    """A journal entry is committed with the state; the cache write after it may never happen."""
    harness.table("people", PEOPLE, [(1, "Ann", "a@x", None)])
    harness.configure(INDEXED)
    harness.run("people")
    keys = [record_key("people", "id", "1"), record_key("people", "email", "a@x")]
    before = {key: harness.cache().get(key) for key in keys}
    harness.table("people", PEOPLE, [(1, "Ann v2", "a@x", None)])
    run_id = harness.run("people").run_id
    # The crash: state and snapshot say "Ann v2", the cache never heard of it, the journal says so.
    harness.cache().set_many(before)
    state = StateStore(harness.project.spec.state.url)
    # ... committed with its journal entry (the same write again) and no cache_written: the entry stays.
    state.commit_chunk(prepare_write(ChunkTarget(run_id, "people", "people", ("people",)), [
        RecordWrite("1", state.sync_fields_of("people", ["1"])["1"], state.snapshot("people")["1"],
                    [IndexKey(keys[0], ""), IndexKey(keys[1], "people")], is_new=False),
    ]))
    assert harness.get("people", "id", 1)["name"] == "Ann"

    report = harness.run("people")

    assert report.counts["written"] == 0 and report.counts["unchanged"] == 1  # the diff found nothing to write
    assert [harness.get("people", index, value)["name"] for index, value in (("id", 1), ("email", "a@x"))] == [
        "Ann v2", "Ann v2"]  # only the replay could write it
    assert state.pending_journal() == []
    state.dispose()


def test_replay_of_another_syncs_stale_key_never_removes_a_live_record(harness):
    """A crashed run of one sync journals a deletion; another sync re-creates the record first."""
    _merged(harness)
    harness.configure(PROFILES, ENGAGEMENT)
    harness.run("profiles")
    harness.run("engagement")
    state = StateStore(harness.project.spec.state.url)
    stale = [record_key("customers", "user_id", "1")]
    run_id = harness.run("profiles").run_id
    with state.engine.begin() as conn:  # what `delete` of record 1 left behind when killed before the cache delete
        Journal(state.engine).add(conn, run_id, "profiles", "customers", stale, [])
    harness.run("engagement")  # record 1 still exists in state (the delete never committed here)
    services = Services(harness.project)
    try:
        settle_collection(state, services.cache, services.sync_order("customers"), collection="customers",
                          regions=["main"])
    finally:
        services.close()
    assert harness.get("customers", "user_id", 1)["engagement"] == {"listens": 10}
