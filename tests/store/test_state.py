"""StateStore schema: databases made by earlier versions keep working after create_all."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from orchestration.store.state import ChunkTarget, IndexKey, RecordWrite, StateStore, prepare_write
from orchestration.store.state.engine import SQLITE_PAGE_SIZE
from orchestration.store.state.records import IndexEntry, Records

# record_indices as the first versions created it: a rowid table with an index on sync_name.
EARLIER_RECORD_INDICES = [
    "create table record_indices (cache_key varchar(250) not null primary key, collection varchar(64) not null, "
    "pk varchar(512) not null, sync_name varchar(64) not null)",
    "create index ix_record_indices_collection_pk on record_indices (collection, pk)",
    "create index ix_record_indices_sync on record_indices (sync_name)",
    "insert into record_indices values ('L1:people:id:=1', 'people', '1', '')",
]


@pytest.fixture(params=["sqlite", "postgres"])
def state_url(request) -> str:
    return request.getfixturevalue(f"{request.param}_url")


def test_create_all_on_an_earlier_database_drops_the_retired_index_and_keeps_the_keys(state_url):
    engine = sa.create_engine(state_url)
    with engine.begin() as conn:
        for statement in EARLIER_RECORD_INDICES:
            conn.exec_driver_sql(statement)
    state = StateStore(state_url)
    state.create_all()
    state.create_all()  # idempotent
    assert "ix_record_indices_sync" not in {index["name"] for index in sa.inspect(engine).get_indexes("record_indices")}
    assert state.resolve("L1:people:id:=1") == ("people", "1")
    with state.engine.begin() as conn:
        Records(state.engine).upsert_index_keys(conn, [IndexEntry("L1:people:id:=1", "people", "2", "")])
    assert state.resolve("L1:people:id:=1") == ("people", "2")
    state.dispose()
    engine.dispose()


def test_a_new_sqlite_state_gets_large_pages_and_an_existing_one_keeps_its_own(tmp_path):
    earlier = tmp_path / "earlier.db"
    engine = sa.create_engine(f"sqlite:///{earlier}")
    with engine.begin() as conn:
        for statement in EARLIER_RECORD_INDICES:
            conn.exec_driver_sql(statement)
    engine.dispose()
    for path, pages in ((tmp_path / "new.db", SQLITE_PAGE_SIZE), (earlier, 4096)):
        state = StateStore(f"sqlite:///{path}")
        state.create_all()
        with state.engine.connect() as conn:
            assert conn.exec_driver_sql("pragma page_size").scalar() == pages
            assert conn.exec_driver_sql("pragma journal_mode").scalar() == "wal"
        state.dispose()
    assert StateStore(f"sqlite:///{earlier}").resolve("L1:people:id:=1") == ("people", "1")


def test_create_all_adds_the_owed_keys_and_tombstones_tables_to_an_earlier_database(state_url):
    engine = sa.create_engine(state_url)
    with engine.begin() as conn:
        for statement in EARLIER_RECORD_INDICES:
            conn.exec_driver_sql(statement)
    state = StateStore(state_url)
    state.create_all()
    state.create_all()  # idempotent
    assert {"region_pending_keys", "record_tombstones"} <= set(sa.inspect(engine).get_table_names())
    state.owe(["eu"], "people", ["L1:people:id:=1", "L1:people:id:=2"])
    state.owe(["eu"], "people", ["L1:people:id:=1"])  # owed twice: kept once
    state.add_tombstones("people", "profiles", ["1"])
    state.add_tombstones("people", "profiles", ["1"])
    assert list(state.iter_owed_keys("eu", "people")) == [["L1:people:id:=1", "L1:people:id:=2"]]
    assert state.owed_collections("eu") == {"people"} and state.owed_collections("us") == set()
    state.settle("eu", "people", ["L1:people:id:=1", "L1:people:id:=2"])
    assert state.owed_collections("eu") == set()
    assert state.tombstoned("people", ["1", "2"], by=["profiles", "scores"]) == {"1"}
    assert state.tombstoned("people", ["1", "2"], by=["scores"]) == set()  # profiles no longer configured
    state.lift_tombstones("people", "profiles", ["1"])
    assert state.tombstoned("people", ["1"], by=["profiles"]) == set()
    state.dispose()
    engine.dispose()


def _person(pk: str, email: str, *, is_new: bool) -> RecordWrite:
    body = f'{{"id":{pk},"email":"{email}"}}'.encode()
    keys = [IndexKey(f"L1:people:id:={pk}", ""), IndexKey(f"L1:people:email:={email}", "people")]
    return RecordWrite(pk, body, 0, keys, is_new=is_new)


def test_a_chunk_write_says_what_the_caches_must_do_and_owes_it_to_the_regions_left_out(state_url):
    state = StateStore(state_url)
    state.create_all()
    people = ChunkTarget(1, "people", "people", ("people",), owed_regions=("eu",))
    first = state.commit_chunk(prepare_write(people, [_person("1", "a@x", is_new=True), _person("2", "b@x", is_new=True)]))
    assert first.stale_keys == [] and first.pks == ["1", "2"]
    assert set(first.values) == {"L1:people:id:=1", "L1:people:email:=a@x", "L1:people:id:=2", "L1:people:email:=b@x"}
    assert [entry.id for entry in state.pending_journal()] == [first.journal_id]

    changed = state.commit_chunk(prepare_write(people, [_person("1", "a2@x", is_new=False)]))
    assert changed.stale_keys == ["L1:people:email:=a@x"]  # the old index value leaves the cache
    assert set(changed.values) == {"L1:people:id:=1", "L1:people:email:=a2@x"}
    assert state.resolve("L1:people:email:=a@x") is None and state.resolve("L1:people:email:=a2@x") == ("people", "1")
    owed = [key for keys in state.iter_owed_keys("eu", "people") for key in keys]
    assert "L1:people:email:=a@x" in owed and "L1:people:email:=a2@x" in owed

    state.cache_written(first)
    state.cache_written(changed)
    assert state.pending_journal() == []
    assert state.snapshot("people") == {"1": 0, "2": 0}
    state.dispose()
