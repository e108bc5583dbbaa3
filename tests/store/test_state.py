"""StateStore schema: databases made by earlier versions keep working after create_all."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from orchestration.store.state import StateStore
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
