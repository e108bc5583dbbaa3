"""Reading a model from the warehouse (DuckDB or Postgres through SQLAlchemy), in chunks.

DuckDB models are read natively (no SQLAlchemy row objects), and DuckDB can also compare the
model with the sync's snapshot itself (`iter_delta`), so only rows that changed reach Python.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Iterator, NamedTuple, Sequence

import duckdb
import numpy as np
import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Engine

# Rows of the snapshot copied into DuckDB per step (bounded, so memory stays flat).
SNAPSHOT_BATCH = 100_000
# Leaf types whose JSON text (DuckDB's to_json) parses back to exactly the value DuckDB's own
# Python conversion gives. A STRUCT or LIST made only of them is fetched as JSON and parsed by
# orjson: a third of the cost of DuckDB building the nested Python objects itself.
_JSON_EXACT_LEAVES = frozenset({
    "varchar", "boolean", "tinyint", "smallint", "integer", "bigint", "utinyint", "usmallint", "uinteger",
})


class DeltaRow(NamedTuple):
    """A model row that needs mapping, or (`row` None) a snapshot record whose row left the model."""

    row: dict[str, Any] | None
    pk: str | None  # the primary index value as SQL computed it (None: null or empty)
    fingerprint: int | None  # hash of the columns the record depends on and of the mapping
    previous: int | None  # the snapshot's fingerprint of this pk (None: not in the snapshot)
    shared: bool  # another row of the model has the same primary or extra index value


class WarehouseError(RuntimeError):
    """The model's query failed; the message carries the database's reason."""


def make_warehouse_engine(url: str) -> Engine:
    if url.startswith("duckdb"):
        # Read-only, so syncs do not take DuckDB's writer lock away from dbt.
        return sa.create_engine(url, connect_args={"read_only": True}, poolclass=sa.pool.NullPool)
    return sa.create_engine(url, pool_pre_ping=True)


class Warehouse:
    def __init__(self, url: str, *, engine: Engine | None = None):
        self.url = url
        self.engine = engine or make_warehouse_engine(url)

    def columns(self, sql: str) -> list[str]:
        """The model's column names, without reading its rows."""
        try:
            with self.engine.connect() as conn:
                result = conn.execute(sa.text(f"select * from ({sql}) as larder_model where 1 = 0"))
                return list(result.keys())
        except sa.exc.DBAPIError as error:
            raise WarehouseError(f"model query failed: {error.orig}") from None

    @property
    def is_duckdb(self) -> bool:
        return self.engine.dialect.name == "duckdb"

    def column_types(self, sql: str) -> dict[str, str]:
        """The model's column → SQL type name (DuckDB only)."""
        with self._duckdb() as conn:
            return {row[0]: row[1] for row in _run(conn, f"describe select * from ({sql}) as larder_model").fetchall()}

    def iter_chunks(self, sql: str, chunk_size: int) -> Iterator[list[dict[str, Any]]]:
        """Stream the model's rows as lists of dicts, at most `chunk_size` at a time."""
        if self.is_duckdb:
            with self._duckdb() as conn:
                result = _run(conn, sql)
                as_dict = _row_reader(result.description)
                while part := result.fetchmany(chunk_size):
                    yield [as_dict(row) for row in part]
            return
        with self.engine.connect() as conn:
            try:
                result = conn.execution_options(stream_results=True, yield_per=chunk_size).execute(sa.text(sql))
            except sa.exc.DBAPIError as error:
                raise WarehouseError(f"model query failed: {error.orig}") from None
            names = list(result.keys())
            for part in result.partitions(chunk_size):
                yield [dict(zip(names, row)) for row in part]

    def iter_delta(
        self,
        sql: str,
        *,
        index_columns: Sequence[str],
        source_columns: Sequence[str],
        snapshot: Iterable[list[tuple[str, int]]],
        salt: str,
        rewrite_all: bool,
        chunk_size: int,
    ) -> "ModelDelta":
        """The rows that differ from the snapshot, compared in DuckDB (see ModelDelta)."""
        return ModelDelta(self, sql, index_columns, source_columns, snapshot, salt, rewrite_all, chunk_size)

    def _duckdb(self) -> duckdb.DuckDBPyConnection:
        # Read-only, so syncs do not take DuckDB's writer lock away from dbt.
        conn = duckdb.connect(self.engine.url.database, read_only=True)
        conn.execute("set enable_progress_bar = false")
        return conn

    def preview(self, sql: str, limit: int = 100) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            result = conn.execute(sa.text(f"select * from ({sql}) as larder_model limit {int(limit)}"))
            names = list(result.keys())
            return [dict(zip(names, row)) for row in result]

    def count(self, sql: str) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(sa.text(f"select count(*) from ({sql}) as larder_model")).scalar_one())

    def dispose(self) -> None:
        self.engine.dispose()


class ModelDelta:
    """Iterating yields chunks of DeltaRow: every row that is new, changed, shares an index value
    with another row, or has a null primary index, and every snapshot pk no row has any more.

    A row absent from the chunks is unchanged and unique, so it needs neither mapping nor
    duplicate checks; `snapshot_size` (known once iteration starts) lets the caller count them.
    The fingerprint covers only `source_columns`, salted with the mapping, so a column the
    mapping does not read changes nothing and a changed mapping changes every fingerprint.
    """

    def __init__(self, warehouse, sql, index_columns, source_columns, snapshot, salt, rewrite_all, chunk_size):
        self._warehouse, self._sql, self._snapshot = warehouse, sql, snapshot
        self._index_columns, self._source_columns = list(index_columns), list(source_columns)
        self._salt, self._rewrite_all, self._chunk_size = salt, rewrite_all, chunk_size
        self.snapshot_size = 0

    def __iter__(self) -> Iterator[list[DeltaRow]]:
        with self._warehouse._duckdb() as conn:
            self._load_snapshot(conn)
            result = _run(conn, self._query(_nested_as_json(conn, self._sql)), (self._salt,))
            width = len(result.description) - 5
            as_dict = _row_reader(result.description[:width])
            while part := result.fetchmany(self._chunk_size):
                yield [DeltaRow(None if row[width] else as_dict(row), *row[width + 1 :]) for row in part]

    def _load_snapshot(self, conn) -> None:
        conn.execute("create temp table larder_snapshot (pk varchar, fp bigint)")
        for batch in self._snapshot:
            conn.register("larder_snapshot_batch", {
                "pk": np.array([pk for pk, _ in batch], dtype=object),
                "fp": np.fromiter((fp for _, fp in batch), dtype=np.int64, count=len(batch)),
            })
            conn.execute("insert into larder_snapshot select * from larder_snapshot_batch")
            conn.unregister("larder_snapshot_batch")
            self.snapshot_size += len(batch)

    def _query(self, as_json: Sequence[str]) -> str:
        """One pass: the model (keys computed) full-joined with the snapshot, plus the sets of key
        values more than one row has. The model is not materialized, so memory stays flat.
        The `as_json` columns come as JSON text (see _nested_as_json)."""
        text = [f"nullif(cast({_quote(c)} as varchar), '')" for c in self._index_columns]
        keys = ", ".join(f"{expr} as __larder_k{i}" for i, expr in enumerate(text))
        fingerprint = f"(hash({', '.join(map(_quote, self._source_columns))}, $1::varchar) >> 1)::bigint"
        shared_joins = "\n".join(
            f"left join (select {expr} as v from model group by 1 having count(*) > 1) as d{i} on m.__larder_k{i} = d{i}.v"
            for i, expr in enumerate(text)
        )
        shared = " or ".join(f"d{i}.v is not null" for i in range(len(text)))
        replace = f"replace ({', '.join(f'to_json(m.{_quote(c)}) as {_quote(c)}' for c in as_json)})" if as_json else ""
        wanted = "true" if self._rewrite_all else f"m.__larder_fp is null or s.pk is null or s.fp <> m.__larder_fp or {shared}"
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
