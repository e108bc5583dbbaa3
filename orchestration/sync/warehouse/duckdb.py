"""The DuckDB warehouse, read natively (no SQLAlchemy row objects).

DuckDB compares the model with the sync's snapshot itself (`iter_delta`), in one query, so only
rows that changed reach Python.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import duckdb
import numpy as np
import orjson
import sqlalchemy as sa

from orchestration.sync.warehouse.base import PART_CHUNK_ROWS, DeltaRow, Duplicates, Snapshot, Warehouse, WarehouseError
from orchestration.sync.warehouse.pushdown import DUCKDB_MEMORY, load_snapshot, shared_values

# Leaf types whose JSON text (DuckDB's to_json) parses back to exactly the value DuckDB's own
# Python conversion gives. A STRUCT or LIST made only of them is fetched as JSON and parsed by
# orjson: a third of the cost of DuckDB building the nested Python objects itself.
_JSON_EXACT_LEAVES = frozenset({
    "varchar", "boolean", "tinyint", "smallint", "integer", "bigint", "utinyint", "usmallint", "uinteger",
})
SHARED_VALUES_PER_FETCH = 100_000  # key values more than one row has, moved into a split's file per step
# What counting them may hold of the sync's own process (its table of every key value spills past it).
SHARED_VALUES_MEMORY = "64MB"


class DuckDBWarehouse(Warehouse):
    """A DuckDB file, opened read-only for each read, so syncs do not take DuckDB's writer lock
    away from dbt. Timestamps with time zones are read in UTC, as on every warehouse."""

    supports_delta = True

    def __init__(self, url: str):
        self.url = url
        self.path = sa.engine.make_url(url).database or ":memory:"

    def __reduce__(self):  # for a worker process that reads a part of a delta (Warehouse.__new__ needs the URL)
        return type(self), (self.url,)

    def columns(self, sql: str) -> list[str]:
        return list(self.column_types(sql))

    def column_types(self, sql: str) -> dict[str, str]:
        with self._connect() as conn:
            return {row[0]: row[1] for row in _run(conn, f"describe select * from ({sql}) as larder_model").fetchall()}

    def iter_chunks(self, sql: str, chunk_size: int) -> Iterator[list[dict[str, Any]]]:
        with self._connect() as conn:
            result = _run(conn, sql)
            as_dict = _row_reader(result.description)
            while part := result.fetchmany(chunk_size):
                yield [as_dict(row) for row in part]

    def rows_with_keys(self, sql: str, column: str, keys: Sequence[str], chunk_size: int) -> Iterator[list[dict[str, Any]]]:
        marks = ", ".join("?" for _ in keys)
        query = f"select * from ({sql}) as larder_model where nullif(cast({_quote(column)} as varchar), '') in ({marks})"
        with self._connect() as conn:
            result = _run(conn, query, list(keys))
            as_dict = _row_reader(result.description)
            while part := result.fetchmany(chunk_size):
                yield [as_dict(row) for row in part]

    def iter_delta(self, sql: str, *, index_columns: Sequence[str], source_columns: Sequence[str], snapshot: Snapshot,
                   salt: str, rewrite_all: bool, chunk_size: int) -> DuckDBDelta:
        return DuckDBDelta(self, sql, index_columns, source_columns, snapshot, salt, rewrite_all, chunk_size)

    def count(self, sql: str) -> int:
        return int(self._scalar(f"select count(*) from ({sql}) as larder_model"))

    def count_null_or_empty(self, sql: str, column: str) -> int:
        quoted = _quote(column)
        return int(self._scalar(
            f"select count(*) from ({sql}) as larder_model where {quoted} is null or cast({quoted} as varchar) = ''"
        ))

    def duplicates(self, sql: str, column: str, samples: int) -> Duplicates:
        quoted = _quote(column)
        grouped = (f"select {quoted} as value, count(*) as n from ({sql}) as larder_model "
                   f"where {quoted} is not null group by {quoted} having count(*) > 1")
        with self._connect() as conn:
            total = _run(conn, f"select count(*) from ({grouped}) as d").fetchall()[0][0]
            top = _run(conn, f"{grouped} order by n desc limit {int(samples)}").fetchall()
        return Duplicates(int(total), [(value, int(n)) for value, n in top])

    def preview(self, sql: str, limit: int = 100) -> list[dict[str, Any]]:
        with self._connect() as conn:
            result = _run(conn, f"select * from ({sql}) as larder_model limit {int(limit)}")
            as_dict = _row_reader(result.description)
            return [as_dict(row) for row in result.fetchall()]

    def dispose(self) -> None:
        pass  # every read opens and closes its own connection

    @contextmanager
    def _connect(self) -> Iterator[duckdb.DuckDBPyConnection]:
        try:
            conn = duckdb.connect(self.path, read_only=self.path != ":memory:")
        except duckdb.Error as error:
            raise WarehouseError(f"cannot open the DuckDB warehouse: {error}") from None
        try:
            conn.execute("set enable_progress_bar = false")
            _read_in_utc(conn)
            yield conn
        finally:
            conn.close()

    def _scalar(self, sql: str) -> Any:
        with self._connect() as conn:
            return _run(conn, sql).fetchall()[0][0]


class DuckDBDelta:
    """The ModelDelta of a DuckDB model: one query full-joins it with the snapshot, loaded into a
    temporary table, and DuckDB's `hash` of the source columns is the fingerprint.

    `split(n)` gives n deltas that each yield the rows of one part of the primary keys, to be
    read from n processes: the snapshot is loaded once, into a temporary DuckDB file each part
    attaches read-only."""

    def __init__(self, warehouse, sql, index_columns, source_columns, snapshot, salt, rewrite_all, chunk_size,
                 part: tuple[int, int] | None = None):
        self._warehouse, self._sql, self._snapshot = warehouse, sql, snapshot
        self._index_columns, self._source_columns = list(index_columns), list(source_columns)
        self._salt, self._rewrite_all, self._chunk_size = salt, rewrite_all, chunk_size
        self._part = part  # (index, parts); the snapshot is then the path of a DuckDB file holding it
        self.snapshot_size = 0

    @contextmanager
    def split(self, parts: int, on_wait: Callable[[], None] | None = None) -> Iterator[list[DuckDBDelta]]:
        """The snapshot, and the key values more than one of the model's rows has, go once into a
        temporary DuckDB file that every part attaches. (`on_wait` is not called: DuckDB reads the
        snapshot as fast as the state gives it.)"""
        with tempfile.TemporaryDirectory(prefix="larder-snapshot-") as folder:
            path = os.path.join(folder, "snapshot.duckdb")
            with duckdb.connect(path) as conn:
                self.snapshot_size = load_snapshot(conn, self._snapshot, temporary=False)
            self._write_shared_values(path)
            yield [
                DuckDBDelta(self._warehouse, self._sql, self._index_columns, self._source_columns, path, self._salt,
                            self._rewrite_all, min(self._chunk_size, PART_CHUNK_ROWS), part=(index, parts))
                for index in range(parts)
            ]

    def _write_shared_values(self, path: str) -> None:
        """`larder_shared_{i} (v)` in the file at `path`: the values of index column i that more than
        one row has. Counted once here, before the parts start, rather than in every part: each
        would hold a table of every key value of the model meanwhile."""
        with self._warehouse._connect() as conn, duckdb.connect(path) as split:
            _cap_memory(conn, SHARED_VALUES_MEMORY, spill_to=os.path.dirname(path))
            for i, expr in enumerate(self._key_texts()):
                split.execute(f"create table larder_shared_{i} (v varchar)")
                result = _run(conn, shared_values(expr, f"({self._sql}) as larder_model"))
                while batch := result.fetchmany(SHARED_VALUES_PER_FETCH):
                    split.register("larder_shared_batch", {"v": np.array([v for v, in batch], dtype=object)})
                    split.execute(f"insert into larder_shared_{i} select v from larder_shared_batch")
                    split.unregister("larder_shared_batch")

    def _key_texts(self) -> list[str]:
        """Each index column as the text its key values are compared by."""
        return [f"nullif(cast({_quote(c)} as varchar), '')" for c in self._index_columns]

    def __iter__(self) -> Iterator[list[DeltaRow]]:
        with self._warehouse._connect() as conn, tempfile.TemporaryDirectory(prefix="larder-delta-") as spill:
            # The snapshot's join table grows with the collection: past DUCKDB_MEMORY it goes to disk.
            _cap_memory(conn, DUCKDB_MEMORY, spill_to=spill)
            if self._part is None:
                self.snapshot_size = load_snapshot(conn, self._snapshot)
            else:  # one of several processes, a thread each: together they use every core, not more
                conn.execute("set threads = 1")
                conn.execute(f"attach '{_literal(self._snapshot)}' as larder_snapshot_file (read_only)")
                conn.execute("create temp view larder_snapshot as select * from larder_snapshot_file.larder_snapshot")
            result = _run(conn, self._query(_nested_as_json(conn, self._sql)), (self._salt,))
            width = len(result.description) - 5
            as_dict = _row_reader(result.description[:width])
            new = tuple.__new__  # a DeltaRow without its Python-level constructor: once per row
            while part := result.fetchmany(self._chunk_size):
                yield [new(DeltaRow, (None if row[width] else as_dict(row), *row[width + 1 :])) for row in part]

    def _query(self, as_json: Sequence[str]) -> str:
        """One pass: the model (keys computed) full-joined with the snapshot, plus the sets of key
        values more than one row has (a part reads them from the split's file). The model is not
        materialized, so memory stays flat. The `as_json` columns come as JSON text (see
        _nested_as_json)."""
        text = self._key_texts()
        keys = ", ".join(f"{expr} as __larder_k{i}" for i, expr in enumerate(text))
        fingerprint = f"(hash({', '.join(map(_quote, self._source_columns))}, $1::varchar) >> 1)::bigint"
        shared_sets = [
            f"larder_snapshot_file.larder_shared_{i}" if self._part is not None else f"({shared_values(expr, 'model')})"
            for i, expr in enumerate(text)
        ]
        shared_joins = "\n".join(
            f"left join {values} as d{i} on m.__larder_k{i} = d{i}.v" for i, values in enumerate(shared_sets)
        )
        shared = " or ".join(f"d{i}.v is not null" for i in range(len(text)))
        replace = f"replace ({', '.join(f'to_json(m.{_quote(c)}) as {_quote(c)}' for c in as_json)})" if as_json else ""
        wanted = "true" if self._rewrite_all else f"m.__larder_fp is null or s.pk is null or s.fp <> m.__larder_fp or {shared}"
        if self._part is not None:
            index, parts = self._part
            wanted = f"({wanted}) and hash(coalesce(m.__larder_k0, s.pk)) % {int(parts)} = {int(index)}"
        return f"""
            with model as not materialized (select * from ({self._sql}) as larder_model),
            keyed as (select model.*, {keys}, {fingerprint} as __larder_fp from model)
            select m.* exclude ({", ".join(f"__larder_k{i}" for i in range(len(text)))}, __larder_fp) {replace},
                   m.__larder_fp is null as __larder_gone, coalesce(m.__larder_k0, s.pk) as __larder_pk,
                   m.__larder_fp, s.fp as __larder_previous, coalesce({shared}, false) as __larder_shared
            from keyed as m full outer join larder_snapshot as s on m.__larder_k0 = s.pk
            {shared_joins}
            where {wanted}
        """


def _cap_memory(conn: duckdb.DuckDBPyConnection, limit: str, *, spill_to: str) -> None:
    """What the connection's queries may hold in memory; past it they spill to the folder `spill_to`."""
    conn.execute(f"set memory_limit = '{limit}'")
    conn.execute(f"set temp_directory = '{_literal(spill_to)}'")


def _read_in_utc(conn: duckdb.DuckDBPyConnection) -> None:
    """Timestamps with time zones in UTC, whatever the machine's zone. The setting comes with
    DuckDB's ICU extension; without it DuckDB gives them in UTC already."""
    try:
        conn.execute("set TimeZone = 'UTC'")
    except duckdb.Error:
        pass


def _nested_as_json(conn: duckdb.DuckDBPyConnection, sql: str) -> list[str]:
    """The model's STRUCT and LIST columns whose every leaf is in _JSON_EXACT_LEAVES."""
    model = conn.sql(f"select * from ({sql}) as larder_model")
    return [name for name, kind in zip(model.columns, model.types) if kind.id in ("struct", "list") and _json_exact(kind)]


def _json_exact(kind) -> bool:
    if kind.id in ("struct", "list"):
        return all(_json_exact(child) for _, child in kind.children)
    return kind.id in _JSON_EXACT_LEAVES


def _row_reader(description) -> Callable[[tuple], dict[str, Any]]:
    """tuple → dict of the described columns (extra trailing values ignored). JSON columns are
    parsed, as SQLAlchemy's JSON type did: DuckDB hands them over as text."""
    names = [d[0] for d in description]
    json_columns = [d[0] for d in description if str(d[1]) == "JSON"]
    if not json_columns:
        return lambda row: dict(zip(names, row))

    def as_dict(row: tuple) -> dict[str, Any]:
        values = dict(zip(names, row))
        for name in json_columns:
            if values[name] is not None:
                values[name] = orjson.loads(values[name])
        return values

    return as_dict


def _run(conn: duckdb.DuckDBPyConnection, sql: str, parameters: Sequence[Any] | None = None):
    try:
        return conn.execute(sql, parameters) if parameters else conn.execute(sql)
    except duckdb.Error as error:
        raise WarehouseError(f"model query failed: {error}") from None


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return text.replace("'", "''")
