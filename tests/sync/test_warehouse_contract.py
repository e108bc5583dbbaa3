"""The warehouse seam's contract: the same cases on DuckDB, Postgres and MariaDB.

A model's values map to the same record on every warehouse (README, "How values are served"), and
each warehouse's delta decides exactly what the DuckDB one decides: new, changed, gone, index-sharing
rows and rows without a primary key; a type change or a mapping change rewrites everything.
"""

from __future__ import annotations

import time

import orjson
import pytest

from orchestration.config.specs import SyncSpec
from orchestration.sync.mapping import RecordMapper
from orchestration.sync.warehouse import Warehouse, WarehouseError, pushdown
from orchestration.sync.warehouse.pushdown import KeyedDelta
from orchestration.sync.workers import SplittableDelta
from tests.sync.conftest import FETCHES, fetching, make_warehouse_db, sync_config
from tests.sync.warehouse_dbs import MariaDb, PostgresDb, WarehouseDb

VALUE_COLUMNS = [
    ("id", "integer"), ("name", "text"), ("amount", "decimal"), ("whole", "decimal"), ("ratio", "double"),
    ("big", "bigint"), ("flag", "boolean"), ("day", "date"), ("at", "timestamp"), ("at_tz", "timestamptz"),
    ("doc", "json"), ("tags", "text_array"),
]
TRICKY = 'quo"te \'single\' back\\slash %s % :x tab\tnl\n é 漢字 😀 '


def value_rows(db) -> list[tuple]:
    """Three rows: typical values, edge values, and NULL everywhere but the key."""
    instant = "2023-01-14 22:44:25" if db.kind == "mariadb" else "2023-01-15 00:44:25+02"  # MariaDB: no offsets
    rows = [
        (1, "Ann", "12.50", "12.00", 0.25, 2**63 - 1, True, "2023-01-15", "2023-01-14 22:44:25", instant,
         '{"a": {"b": [1, 2.5, "x"]}, "n": null}', ["x", "y z"]),
        (2, TRICKY, "-0.01", "0", 1e-7, -(2**63), False, "1999-12-31", "2000-01-01 00:00:00", "2000-01-01 00:00:00+00"
         if db.kind != "mariadb" else "2000-01-01 00:00:00", '[1, "two", {"three": true}]', []),
        (3, None, None, None, None, None, None, None, None, None, None, None),
    ]
    if not db.has("text_array"):
        rows = [row[:-1] for row in rows]
    return rows


EXPECTED_RECORDS = {
    1: {"id": 1, "name": "Ann", "amount": 12.5, "whole": 12.0, "ratio": 0.25, "big": 2**63 - 1, "flag": True,
        "day": "2023-01-15", "at": "2023-01-14T22:44:25", "at_tz": "2023-01-14T22:44:25+00:00",
        "doc": {"a": {"b": [1, 2.5, "x"]}, "n": None}, "tags": ["x", "y z"]},
    2: {"id": 2, "name": TRICKY, "amount": -0.01, "whole": 0.0, "ratio": 1e-7, "big": -(2**63), "flag": False,
        "day": "1999-12-31", "at": "2000-01-01T00:00:00", "at_tz": "2000-01-01T00:00:00+00:00",
        "doc": [1, "two", {"three": True}], "tags": []},
    3: {"id": 3, "name": None, "amount": None, "whole": None, "ratio": None, "big": None, "flag": None, "day": None,
        "at": None, "at_tz": None, "doc": None, "tags": None},
}


def value_mapper(db) -> RecordMapper:
    """Every column as it is, but MariaDB-only gaps made explicit: its JSON is text and its BOOLEAN a
    TINYINT(1), so those two fields declare their type (a no-op on the other warehouses)."""
    fields = []
    for name, kind in VALUE_COLUMNS:
        if not db.has(kind):
            continue
        field = {"column": name}
        if kind in ("json", "boolean"):
            field["type"] = kind
        fields.append(field)
    return RecordMapper(SyncSpec.model_validate(sync_config(fields=fields)), max_record_bytes=100_000)


def expected_record(db, pk: int) -> dict:
    return {k: v for k, v in EXPECTED_RECORDS[pk].items() if k != "tags" or db.has("text_array")}


@pytest.fixture
def warehouse(warehouse_db):
    warehouse = Warehouse(warehouse_db.url)
    yield warehouse
    warehouse.dispose()


def records_of(rows, mapper) -> dict:
    return {row["id"]: orjson.loads(mapper.map_row(row).body) for row in rows}


def test_values_map_to_the_same_record_on_every_warehouse(warehouse_db, warehouse):
    warehouse_db.create("model", [c for c in VALUE_COLUMNS if warehouse_db.has(c[1])], value_rows(warehouse_db))
    mapper = value_mapper(warehouse_db)
    rows = [row for chunk in warehouse.iter_chunks("select * from model", 2) for row in chunk]
    assert records_of(rows, mapper) == {pk: expected_record(warehouse_db, pk) for pk in EXPECTED_RECORDS}
    assert records_of(warehouse.preview("select * from model", 10), mapper) == records_of(rows, mapper)


def test_delta_rows_map_to_the_same_records_as_read_rows(warehouse_db, warehouse):
    warehouse_db.create("model", [c for c in VALUE_COLUMNS if warehouse_db.has(c[1])], value_rows(warehouse_db))
    mapper = value_mapper(warehouse_db)
    delta = warehouse.delta("select * from model", mapper, snapshot=iter(()), rewrite_all=False, chunk_size=2)
    assert delta is not None
    rows = [d.row for chunk in delta for d in chunk]
    assert records_of(rows, mapper) == {pk: expected_record(warehouse_db, pk) for pk in EXPECTED_RECORDS}


def test_columns_types_and_chunks(warehouse_db, warehouse):
    warehouse_db.create("model", [("id", "integer"), ("email", "varchar"), ("amount", "decimal"), ("day", "date")],
                        [(i, f"{i}@x", "1.5", "2024-01-01") for i in range(5)])
    assert warehouse.columns("select * from model") == ["id", "email", "amount", "day"]
    types = warehouse.column_types("select * from model")
    assert list(types) == ["id", "email", "amount", "day"]
    mapper = RecordMapper(SyncSpec.model_validate(sync_config(indices=["email"], fields=[
        {"column": "id"}, {"column": "email"}, {"column": "amount"}, {"column": "day"}])), max_record_bytes=10_000)
    assert mapper.sql_index_columns(types) == ["id", "email"]  # integer and text keys: SQL computes them
    by_amount = RecordMapper(SyncSpec.model_validate(sync_config(primary_index="amount", fields=[
        {"column": "amount"}])), max_record_bytes=10_000)
    assert by_amount.sql_index_columns(types) is None  # a decimal's text is not its key's
    chunks = list(warehouse.iter_chunks("select * from model order by id", 2))
    assert [len(chunk) for chunk in chunks] == [2, 2, 1]
    assert [row["id"] for chunk in chunks for row in chunk] == [0, 1, 2, 3, 4]


def test_counts_nulls_and_duplicates_for_checks(warehouse_db, warehouse):
    warehouse_db.create("model", [("id", "integer"), ("email", "varchar")], [
        (1, "x"), (2, "x"), (3, "x"), (4, "X"), (5, "y "), (6, "y"), (7, ""), (None, None), (8, " "),
    ])
    sql = "select * from model"
    assert warehouse.count(sql) == 9
    assert warehouse.count_null_or_empty(sql, "email") == 2  # NULL and '', not ' '
    assert warehouse.count_null_or_empty(sql, "id") == 1
    duplicates = warehouse.duplicates(sql, "email", 5)
    assert (duplicates.values, duplicates.samples) == (1, [("x", 3)])  # case and trailing spaces count
    assert warehouse.duplicates(sql, "id", 5).values == 0
    assert [row["id"] for row in warehouse.preview(sql + " order by id", 2)] == [1, 2]


def test_rows_with_keys_are_found_by_their_index_text(warehouse_db, warehouse):
    warehouse_db.create("model", [("id", "integer"), ("email", "varchar")],
                        [(1, "a@x"), (2, "B@x"), (3, "b@x"), (4, ""), (5, TRICKY), (None, "n@x")])
    sql = "select * from model"

    def ids(column: str, keys: list[str]) -> list:
        return sorted(row["id"] for chunk in warehouse.rows_with_keys(sql, column, keys, 2) for row in chunk)

    assert ids("id", ["1", "3", "9"]) == [1, 3]
    assert ids("email", ["b@x", TRICKY]) == [3, 5]  # exact text: case counts
    assert ids("email", [""] + ["a@x"]) == [1]  # an empty value is no key


@pytest.mark.parametrize("read", ["columns", "count", "chunks", "delta"])
def test_a_failing_query_is_a_warehouse_error(warehouse_db, warehouse, read):
    mapper = RecordMapper(SyncSpec.model_validate(sync_config()), max_record_bytes=10_000)
    with pytest.raises(WarehouseError):
        if read == "columns":
            warehouse.columns("select * from no_such_table")
        elif read == "count":
            warehouse.count("select * from no_such_table")
        elif read == "chunks":
            list(warehouse.iter_chunks("select * from no_such_table", 10))
        else:
            list(warehouse.delta("select * from no_such_table", mapper, snapshot=iter(()), rewrite_all=False,
                                 chunk_size=10) or ())


# --- the delta -------------------------------------------------------------------------------

PEOPLE = [("id", "varchar"), ("name", "varchar"), ("email", "varchar"), ("note", "varchar")]
MODEL = "select * from people where name is null or name not like '%never%'"  # a % in the model's SQL


def people_mapper(**overrides) -> RecordMapper:
    config = sync_config(indices=["email"], fields=[{"column": "id"}, {"column": "name"}, {"column": "email"}])
    config.update(overrides)
    return RecordMapper(SyncSpec.model_validate(config), max_record_bytes=10_000)


class Deltas:
    """Runs a warehouse's delta and keeps the snapshot a sync would store from it."""

    def __init__(self, warehouse, mapper):
        self.warehouse, self.mapper = warehouse, mapper
        self.snapshot: dict[str, int] = {}

    def run(self, *, rewrite_all: bool = False, keep: bool = True, sql: str = MODEL, parts: int = 0) -> dict:
        """What the delta yields; read in `parts` (each part read here, one after the other) if given."""
        delta = self.warehouse.delta(sql, self.mapper, snapshot=iter([list(self.snapshot.items())]),
                                     rewrite_all=rewrite_all, chunk_size=3)
        assert delta is not None, "the warehouse must diff these keys itself"
        if parts:
            with delta.split(parts) as split:
                chunks = [chunk for part in split for chunk in part]
        else:
            chunks = delta
        found = {"new": set(), "changed": set(), "gone": set(), "shared": set(), "null": 0}
        fingerprints = {}
        for chunk in chunks:
            for row in chunk:
                if row.row is None:
                    found["gone"].add(row.pk)
                    assert row.previous == self.snapshot[row.pk]
                elif row.pk is None:
                    found["null"] += 1
                else:
                    assert row.row["id"] == row.pk
                    found["shared" if row.shared else "new" if row.previous is None else "changed"].add(row.pk)
                    assert row.previous == self.snapshot.get(row.pk)
                    fingerprints[row.pk] = row.fingerprint
        assert delta.snapshot_size == len(self.snapshot)
        if keep:
            for pk in found["gone"]:
                del self.snapshot[pk]
            self.snapshot.update(fingerprints)
        return found


def nothing(**found) -> dict:
    return {"new": set(), "changed": set(), "gone": set(), "shared": set(), "null": 0, **found}


KEYS = ["1", "2", "a", "A", " a", "a ", "%s", "é", "x'y", 'q"q', "new\nline", "a,b", "\\N"]  # all distinct keys


SPLITS = ("duckdb", "postgres")  # warehouses whose delta worker processes read in parts


@pytest.fixture(params=SPLITS)
def split_db(request) -> WarehouseDb:
    return make_warehouse_db(request, request.param)


@pytest.fixture
def split_warehouse(split_db):
    warehouse = Warehouse(split_db.url)
    yield warehouse
    warehouse.dispose()


@pytest.mark.parametrize("fetch", sorted(FETCHES))
def test_delta_finds_new_changed_gone_and_nothing_else(warehouse_db, warehouse, fetch):
    with fetching(fetch):
        _finds_new_changed_gone(warehouse_db, warehouse, parts=0)


def test_a_delta_read_in_parts_finds_new_changed_gone_and_nothing_else(split_db, split_warehouse):
    _finds_new_changed_gone(split_db, split_warehouse, parts=3)


def _finds_new_changed_gone(db, warehouse, *, parts: int) -> None:
    rows = [(pk, f"name {pk}", f"{pk}@x", "n") for pk in KEYS]
    db.create("people", PEOPLE, rows)
    deltas = Deltas(warehouse, people_mapper())
    assert deltas.run(parts=parts) == nothing(new=set(KEYS))
    assert deltas.run(parts=parts) == nothing()
    changed = [(pk, f"name {pk}!" if pk in ("a", " a") else name, email, "other note")  # note: not mapped
               for pk, name, email, _ in rows if pk != "2"] + [("3", "new", "3@x", "n")]
    db.create("people", PEOPLE, changed)
    assert deltas.run(parts=parts) == nothing(new={"3"}, changed={"a", " a"}, gone={"2"})
    assert deltas.run(parts=parts) == nothing()
    assert deltas.run(rewrite_all=True, keep=False, parts=parts) == nothing(changed=set(KEYS) - {"2"} | {"3"})


@pytest.mark.parametrize("fetch", sorted(FETCHES))
def test_delta_yields_rows_sharing_an_index_value_and_rows_without_a_key(warehouse_db, warehouse, fetch):
    with fetching(fetch):
        _yields_sharing_and_keyless_rows(warehouse_db, warehouse, parts=0)


def test_a_delta_read_in_parts_yields_rows_sharing_an_index_value_and_rows_without_a_key(split_db, split_warehouse):
    _yields_sharing_and_keyless_rows(split_db, split_warehouse, parts=3)


def _yields_sharing_and_keyless_rows(db, warehouse, *, parts: int) -> None:
    db.create("people", PEOPLE, [("1", "a", "same@x", ""), ("2", "b", "same@x", ""), ("3", "c", "c@x", ""),
                                 ("4", "d", "d@x", ""), ("4", "d2", "d2@x", ""), (None, "e", "e@x", ""),
                                 ("", "f", "f@x", "")])
    deltas = Deltas(warehouse, people_mapper())
    assert deltas.run(parts=parts) == nothing(new={"3"}, shared={"1", "2", "4"}, null=2)
    # Unchanged, but still sharing: yielded again, so the sync can reject them again.
    assert deltas.run(parts=parts) == nothing(shared={"1", "2", "4"}, null=2)


def test_a_postgres_delta_splitting_slowly_lets_the_sync_keep_its_lease(postgres_url, monkeypatch):
    """The keys pass of a large model takes long: the sync hears of it (and renews its lease) meanwhile."""
    monkeypatch.setattr(pushdown, "PROGRESS_SECONDS", 0.05)
    db = PostgresDb(postgres_url)
    db.create("people", PEOPLE, [(str(i), f"name {i}", f"{i}@x", "") for i in range(20)])
    slow_model = "select people.* from people, (select pg_sleep(0.5)) as slow"
    waits: list[float] = []
    warehouse = Warehouse(postgres_url)
    try:
        delta = warehouse.delta(slow_model, people_mapper(), snapshot=iter([]), rewrite_all=False, chunk_size=50)
        with delta.split(2, on_wait=lambda: waits.append(time.monotonic())) as parts:
            rows = [row for part in parts for chunk in part for row in chunk]
    finally:
        warehouse.dispose()
    assert len(rows) == 20 and len(waits) >= 3


def test_a_mariadb_delta_is_read_in_one_pass_only(mariadb_url):
    """MariaDB cannot share a transaction's view with other connections: its parts could see
    different states of the model, so its delta does not split."""
    warehouse = Warehouse(mariadb_url)
    try:
        MariaDb(mariadb_url).create("people", PEOPLE, [("1", "a", "a@x", "")])
        delta = warehouse.delta(MODEL, people_mapper(), snapshot=iter([]), rewrite_all=False, chunk_size=3)
        assert delta is not None and not isinstance(delta, SplittableDelta)
    finally:
        warehouse.dispose()


def test_parts_of_a_postgres_delta_read_the_view_its_keys_were_read_in(postgres_url):
    """Rows changed, added or removed after the keys were fingerprinted are not seen by the parts:
    each part's fingerprint is that of the row it yields."""
    db = PostgresDb(postgres_url)
    db.create("people", PEOPLE, [(str(i), f"name {i}", f"{i}@x", "") for i in range(200)])
    warehouse = Warehouse(postgres_url)
    try:
        delta = warehouse.delta(MODEL, people_mapper(), snapshot=iter([]), rewrite_all=False, chunk_size=50)
        with delta.split(2) as parts:
            db.run("update people set name = 'later' where id in ('1', '2')", "delete from people where id = '3'",
                   "insert into people values ('900', 'new', '900@x', '')")
            rows = [row for part in parts for chunk in part for row in chunk]
    finally:
        warehouse.dispose()
    assert sorted(row.pk for row in rows) == sorted(str(i) for i in range(200))
    assert {row.row["name"] for row in rows if row.pk in ("1", "2", "3")} == {"name 1", "name 2", "name 3"}


def test_a_changed_column_type_or_mapping_changes_every_fingerprint(warehouse_db, warehouse):
    sql = "select * from people"
    warehouse_db.create("people", [("id", "varchar"), ("name", "varchar"), ("email", "varchar")],
                        [("1", "1", "1@x"), ("2", "2", "2@x")])
    deltas = Deltas(warehouse, people_mapper())
    deltas.run(sql=sql)
    assert deltas.run(sql=sql) == nothing()
    # The same text, another type: 1 is not "1" in a record.
    warehouse_db.create("people", [("id", "varchar"), ("name", "integer"), ("email", "varchar")],
                        [("1", 1, "1@x"), ("2", 2, "2@x")])
    assert deltas.run(sql=sql) == nothing(changed={"1", "2"})
    assert deltas.run(sql=sql) == nothing()
    deltas.mapper = people_mapper(fields=[{"column": "id"}, {"column": "name", "to": "label"}, {"column": "email"}])
    assert deltas.run(sql=sql) == nothing(changed={"1", "2"})


def test_null_and_empty_values_are_told_apart(warehouse_db, warehouse):
    warehouse_db.create("people", PEOPLE, [("1", None, "1@x", ""), ("2", "", "2@x", "")])
    deltas = Deltas(warehouse, people_mapper())
    deltas.run()
    warehouse_db.create("people", PEOPLE, [("1", "", "1@x", ""), ("2", None, "2@x", "")])
    assert deltas.run() == nothing(changed={"1", "2"})


def test_keys_sql_cannot_compute_exactly_fall_back_to_reading_every_row(warehouse_db, warehouse):
    warehouse_db.create("people", [("id", "decimal"), ("name", "varchar")], [("1.50", "a")])
    mapper = RecordMapper(SyncSpec.model_validate(sync_config()), max_record_bytes=10_000)
    assert warehouse.delta("select * from people", mapper, snapshot=iter(()), rewrite_all=False, chunk_size=10) is None


def test_sql_warehouses_fetch_few_changed_rows_by_key_and_many_in_one_pass(warehouse_db, warehouse, monkeypatch):
    if warehouse_db.kind == "duckdb":
        assert not isinstance(warehouse.iter_delta("select 1 as id", index_columns=["id"], source_columns=["id"],
                                                   snapshot=iter(()), salt="s", rewrite_all=False, chunk_size=1),
                              KeyedDelta)
        return
    queries = []

    def recorded(original):
        def read(conn, sql, *args):
            queries.append(sql)
            return original(conn, sql, *args)
        return read

    for read in ("stream", "copy_csv"):
        monkeypatch.setattr(warehouse.dialect, read, recorded(getattr(warehouse.dialect, read)))
    warehouse_db.create("people", PEOPLE, [(str(i), "n", f"{i}@x", "") for i in range(20)])
    deltas = Deltas(warehouse, people_mapper())
    deltas.run()
    assert len(queries) == 2 and "larder_model where" not in queries[1]  # keys, then one pass
    queries.clear()
    warehouse_db.run("update people set name = 'changed' where id = '7'")
    assert deltas.run() == nothing(changed={"7"})
    assert len(queries) == 2 and "larder_model where" in queries[1]  # keys, then the changed row by key


def test_postgres_values_equal_by_type_but_read_back_differently_are_changes(postgres_url):
    """Postgres hashes most types natively: not those whose equality is looser than their records."""
    db = PostgresDb(postgres_url)
    db.run("create table people (id text, n numeric, f float8, doc jsonb, span interval, label varchar(10))",
           "insert into people values ('1', 1, 0, '{\"a\": 1}', '1 day', 'a'), ('2', 1, 0, '{\"a\": 1}', '1 day', 'a'),"
           " ('3', 1, 0, '{\"a\": 1}', '1 day', 'a'), ('4', 1, 0, '{\"a\": 1}', '1 day', 'a'),"
           " ('5', 1, 0, '{\"a\": 1}', '1 day', 'a'), ('6', 1, 0, '{\"a\": 1}', '1 day', 'a')")
    warehouse = Warehouse(postgres_url)
    mapper = RecordMapper(SyncSpec.model_validate(sync_config(fields=[{"column": c} for c in (
        "id", "n", "f", "doc", "span", "label")])), max_record_bytes=10_000)
    deltas = Deltas(warehouse, mapper)
    sql = "select * from people"
    before = records_of_sql(warehouse, sql, mapper)
    deltas.run(sql=sql)
    db.run("update people set n = 1.0 where id = '1'", "update people set f = '-0' where id = '2'",
           "update people set doc = '{\"a\": 1.0}' where id = '3'", "update people set label = 'A' where id = '4'")
    after = records_of_sql(warehouse, sql, mapper)
    assert {pk for pk in before if before[pk] != after[pk]} == {"1", "2", "3", "4"}
    assert deltas.run(sql=sql) == nothing(changed={"1", "2", "3", "4"})
    warehouse.dispose()


def records_of_sql(warehouse, sql, mapper) -> dict:
    return {row["id"]: mapper.map_row(row).body for chunk in warehouse.iter_chunks(sql, 100) for row in chunk}


def test_asset_checks_count_missing_keys_and_duplicates_on_every_warehouse(warehouse_db, warehouse, project_factory):
    from orchestration.assets.checks import evaluate_checks

    warehouse_db.create("people", [("id", "varchar"), ("email", "varchar")],
                        [("1", "a@x"), ("1", "b@x"), ("", "c@x"), (None, "c@x"), ("2", "C@x")])
    project = project_factory([sync_config(indices=["email"], fields=[{"column": "id"}, {"column": "email"}])],
                              warehouse_url=warehouse_db.url)
    outcomes = {o.name: o for o in evaluate_checks(project, project.sync("people"), warehouse)}
    assert outcomes["people_primary_index_not_null"].metadata["null_rows"] == 2
    assert outcomes["people_primary_index_unique"].metadata["duplicate_samples"] == [{"value": "1", "rows": 2}]
    assert outcomes["people_email_unique"].metadata["duplicate_samples"] == [{"value": "c@x", "rows": 2}]


def test_timestamps_with_time_zones_read_in_utc_whatever_the_local_zone(warehouse_db, monkeypatch):
    monkeypatch.setenv("TZ", "Asia/Tokyo")  # the machine's zone (DuckDB's default)
    monkeypatch.setenv("PGTZ", "Asia/Tokyo")  # libpq's session zone
    time.tzset()
    try:
        warehouse_db.create("model", [("id", "integer"), ("at_tz", "timestamptz")], [(1, "2023-01-14 22:44:25")])
        warehouse = Warehouse(warehouse_db.url)
        rows = [row for chunk in warehouse.iter_chunks("select * from model", 10) for row in chunk]
        warehouse.dispose()
    finally:
        monkeypatch.undo()
        time.tzset()
    assert rows[0]["at_tz"].isoformat() == "2023-01-14T22:44:25+00:00"


def test_another_sqlalchemy_dialect_is_read_row_by_row_without_pushdown(tmp_path):
    import sqlite3

    path = tmp_path / "warehouse.sqlite"
    with sqlite3.connect(path) as conn:
        conn.execute("create table people (id integer, email text)")
        conn.executemany("insert into people values (?, ?)", [(1, "a@x"), (2, "a@x"), (3, ""), (None, None)])
    warehouse = Warehouse(f"sqlite:///{path}")
    sql = "select * from people where email is null or email not like '%never%'"
    mapper = RecordMapper(SyncSpec.model_validate(sync_config(fields=[{"column": "id"}, {"column": "email"}])),
                          max_record_bytes=10_000)
    assert warehouse.delta(sql, mapper, snapshot=iter(()), rewrite_all=False, chunk_size=10) is None
    assert [row for chunk in warehouse.iter_chunks(sql, 3) for row in chunk][:2] == [
        {"id": 1, "email": "a@x"}, {"id": 2, "email": "a@x"}]
    assert warehouse.count(sql) == 4
    assert warehouse.count_null_or_empty(sql, "email") == 2
    assert warehouse.duplicates(sql, "email", 5).samples == [("a@x", 2)]
    warehouse.dispose()
