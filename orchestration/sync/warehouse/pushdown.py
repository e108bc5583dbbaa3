"""The diff of a SQL warehouse's model against the sync's snapshot, without reading unchanged rows.

1. The warehouse computes each row's index keys and a fingerprint of the columns the mapping
   reads; only those (a few dozen bytes a row) go into an embedded, in-memory DuckDB (copied as
   CSV where the driver can, while the snapshot loads; else streamed).
2. DuckDB compares them with the snapshot, exactly as the DuckDB backend's single query does:
   which rows are new, changed, share an index value, have no primary key, and which pks left.
3. The rows that need mapping are read: by key, in a few batches, when they are a small share of
   the model; else by streaming the model once and keeping only them.

Everything is read in one transaction that sees one state of the warehouse, so the rows of step 3
are the rows step 1 fingerprinted (and keep step 1's fingerprints).

A warehouse that can share a transaction's view with other connections (Postgres exports its
snapshot) can also be read in parts, each from its own process (`SplitKeyedDelta.split`): steps 1
and 2 run once, into a temporary DuckDB file the parts attach read-only, and each part streams its
share of the model (split by a hash of the primary key) in a transaction that imports the
snapshot, so every part sees exactly the state step 1 fingerprinted.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import TYPE_CHECKING

import duckdb
import numpy as np

from orchestration.sync.warehouse.base import PART_CHUNK_ROWS, DeltaRow, Snapshot

if TYPE_CHECKING:
    from orchestration.sync.warehouse.sqlalchemy import SqlWarehouse

KEY_ROWS_PER_FETCH = 100_000  # (keys, fingerprint) rows streamed into DuckDB per step
# The embedded DuckDB's memory; past it, it spills to a temporary folder, so memory stays flat.
DUCKDB_MEMORY = "256MB"
PROGRESS_SECONDS = 2.0  # while keys are read, an empty chunk this often lets the caller report progress


def load_snapshot(conn: duckdb.DuckDBPyConnection, snapshot: Snapshot, *, temporary: bool = True) -> int:
    """Copy the snapshot into the table `larder_snapshot (pk, fp)` (temporary unless told), batch
    by batch so memory stays flat; returns how many records it holds."""
    size = 0
    conn.execute(f"create {'temp ' if temporary else ''}table larder_snapshot (pk varchar, fp bigint)")
    for batch in snapshot:
        conn.register("larder_snapshot_batch", {
            "pk": np.array([pk for pk, _ in batch], dtype=object),
            "fp": np.fromiter((fp for _, fp in batch), dtype=np.int64, count=len(batch)),
        })
        conn.execute("insert into larder_snapshot select * from larder_snapshot_batch")
        conn.unregister("larder_snapshot_batch")
        size += len(batch)
    return size


def shared_values(key_text: str, rows: str) -> str:
    """The query of the values of `key_text` that more than one of `rows` has, as `v`: index values
    rows share, whose records are rejected as duplicates."""
    return f"select {key_text} as v from {rows} group by 1 having count(*) > 1"


class _Every:
    """`due()` is true once every `seconds`."""

    def __init__(self, seconds: float):
        self.seconds, self.last = seconds, time.monotonic()

    def due(self) -> bool:
        if time.monotonic() - self.last < self.seconds:
            return False
        self.last = time.monotonic()
        return True


def _done(future: Future, seconds: float) -> bool:
    """Whether `future` finished within `seconds` (its exception, if any, raised here)."""
    try:
        future.result(timeout=seconds)
    except TimeoutError:
        return False
    return True


class KeyedDelta:
    """The ModelDelta of a SQL warehouse (see the module's docstring). Yields empty chunks while it
    reads keys, so the caller can report progress (and keep its heartbeat) meanwhile."""

    # Rows that need mapping, as a share of the model, up to which they are fetched by key; over
    # it, one pass over the model costs less than one query per batch of keys. Each of those
    # queries runs the model's SQL again, so they are few at most.
    by_key_max_share = 0.2
    by_key_max_queries = 4

    def __init__(self, warehouse: SqlWarehouse, sql: str, index_columns: Sequence[str],
                 source_columns: Sequence[tuple[str, str]], snapshot: Snapshot, seed: int, rewrite_all: bool,
                 chunk_size: int):
        self._warehouse, self._dialect = warehouse, warehouse.dialect
        self._sql, self._snapshot = sql, snapshot
        self._rewrite_all, self._chunk_size = rewrite_all, chunk_size
        quote = self._dialect.quote
        self._keys = [self._dialect.key_text(quote(c)) for c in index_columns]
        self._fingerprint = self._dialect.fingerprint([(quote(c), kind) for c, kind in source_columns], seed)
        self.snapshot_size = 0

    def __iter__(self) -> Iterator[list[DeltaRow]]:
        with tempfile.TemporaryDirectory(prefix="larder-delta-") as spill, \
                duckdb.connect(":memory:", config={"temp_directory": spill, "memory_limit": DUCKDB_MEMORY}) as duck, \
                self._warehouse.connection(consistent=True) as connection:
            duck.execute("set enable_progress_bar = false")
            yield from self._load(connection, duck, spill)
            rows, wanted, null_keys = self._mark_wanted(duck)
            if self._fetch_by_key(rows, wanted, null_keys):
                yield from self._by_key(connection, duck, null_keys)
            else:
                yield from self._streamed(connection, duck)
            yield from self._gone(duck)

    def _fetch_by_key(self, rows: int, wanted: int, null_keys: int) -> bool:
        queries = -(-wanted // self._dialect.keys_per_fetch) + (null_keys > 0)
        return wanted + null_keys <= self.by_key_max_share * rows and queries <= self.by_key_max_queries

    def _load(self, connection, duck, spill: str) -> Iterator[list[DeltaRow]]:
        """The snapshot into `larder_snapshot`, (k0…kn, fingerprint) of every row into `larder_keys`
        (tables of `duck`, not temporary: in memory, or in the file the parts of a split read).
        A driver that copies writes the keys as CSV to a file, in a thread, while the snapshot loads
        (the warehouse hashes on its own cores meanwhile); else keys are streamed in batches."""
        width = len(self._keys)
        names = [f"k{i}" for i in range(width)]
        duck.execute(f"create table larder_keys ({', '.join(f'{n} varchar' for n in names)}, fp bigint)")
        query = f"select {', '.join(self._keys)}, {self._fingerprint} from ({self._sql}) as larder_model"
        if not self._dialect.copies_csv:
            self.snapshot_size = load_snapshot(duck, self._snapshot, temporary=False)
            yield from self._stream_keys(connection, duck, query, names)
            return
        path = os.path.join(spill, "keys.csv")
        with ThreadPoolExecutor(1, thread_name_prefix="larder-keys") as pool:
            copied = pool.submit(self._copy, connection, query, path)
            self.snapshot_size = load_snapshot(duck, self._snapshot, temporary=False)
            while not _done(copied, PROGRESS_SECONDS):
                yield []
        types = ", ".join([*(f"'{n}': 'VARCHAR'" for n in names), "'fp': 'BIGINT'"])
        duck.execute(f"""
            insert into larder_keys select * from read_csv('{path.replace("'", "''")}', columns = {{{types}}},
                header = false, quote = '"', escape = '"', allow_quoted_nulls = false, auto_detect = false)
        """)
        os.remove(path)

    def _copy(self, connection, query: str, path: str) -> None:
        with open(path, "wb") as out:
            self._dialect.copy_csv(connection, query, out)

    def _stream_keys(self, connection, duck, query: str, names: list[str]) -> Iterator[list[DeltaRow]]:
        progress = _Every(PROGRESS_SECONDS)
        _, batches = self._dialect.stream(connection, query, None, KEY_ROWS_PER_FETCH)
        for batch in batches:
            columns = list(zip(*batch))
            arrays = {name: np.array(columns[i], dtype=object) for i, name in enumerate(names)}
            arrays["fp"] = np.array(columns[len(names)], dtype=np.int64)
            duck.register("larder_keys_batch", arrays)
            duck.execute("insert into larder_keys select * from larder_keys_batch")
            duck.unregister("larder_keys_batch")
            if progress.due():
                yield []

    def _mark_wanted(self, duck) -> tuple[int, int, int]:
        """`larder_wanted (pk, previous, shared, fp)`: the primary keys whose rows need mapping, as
        the DuckDB backend decides it, with the row's fingerprint (rows are read again without it:
        when several rows have a pk, they share it, and are rejected as duplicates anyway).
        Returns (model rows, rows wanted, rows without a primary key)."""
        width = len(self._keys)
        shared_joins = "\n".join(
            f"left join ({shared_values(f'k{i}', 'larder_keys')}) as d{i} on m.k{i} = d{i}.v"
            for i in range(width)
        )
        shared = " or ".join(f"d{i}.v is not null" for i in range(width))
        wanted = "true" if self._rewrite_all else f"s.pk is null or s.fp <> m.fp or {shared}"
        duck.execute(f"""
            create table larder_wanted as
            select m.k0 as pk, any_value(s.fp) as previous, bool_or({shared}) as shared, any_value(m.fp) as fp,
                   count(*) as n
            from larder_keys as m left join larder_snapshot as s on m.k0 = s.pk
            {shared_joins}
            where m.k0 is not null and ({wanted})
            group by m.k0
        """)
        rows, null_keys = duck.execute("select count(*), count(*) filter (where k0 is null) from larder_keys").fetchall()[0]
        wanted_rows = duck.execute("select coalesce(sum(n), 0) from larder_wanted").fetchall()[0][0]
        return int(rows), int(wanted_rows), int(null_keys)

    def _row_query(self, where: str = "") -> str:
        query = f"select larder_model.*, {self._keys[0]} from ({self._sql}) as larder_model"
        return f"{query} {where}" if where else query

    def _by_key_query(self, keys: int) -> str:
        """The rows whose primary key is one of `keys` parameters. The query has parameters, so
        the % signs of the model's SQL (and of column names) are escaped for the driver."""
        key, escaped = self._keys[0].replace("%", "%%"), self._row_query().replace("%", "%%")
        return f"{escaped} where {self._dialect.keys_filter(key, keys)}"

    def _by_key(self, connection, duck, null_keys: int) -> Iterator[list[DeltaRow]]:
        """Fetch the wanted rows by primary key, a batch of keys per query, and those without one."""
        dialect = self._dialect
        if null_keys:
            yield from self._fetched(connection, self._row_query(f"where {self._keys[0]} is null"), None, None)
        result = duck.execute("select pk, previous, shared, fp from larder_wanted")
        while batch := result.fetchmany(dialect.keys_per_fetch):
            wanted = {pk: (previous, shared, fp) for pk, previous, shared, fp in batch}
            yield from self._fetched(connection, self._by_key_query(len(batch)), dialect.key_parameters(list(wanted)),
                                     wanted)

    def _fetched(self, connection, query: str, parameters, wanted) -> Iterator[list[DeltaRow]]:
        """Rows of `query` (model columns, then the key) as DeltaRows; with `wanted`, only rows whose
        key is exactly one of it (the warehouse's collation may match more). Without, rows have no
        primary key: they are rejected, so they need no fingerprint."""
        description, batches = self._dialect.stream(connection, query, parameters, self._chunk_size)
        as_dict = None
        for batch in batches:
            width = len(batch[0]) - 1
            as_dict = as_dict or self._dialect.row_reader(description()[:width])
            if wanted is None:
                yield [DeltaRow(as_dict(row), None, None, None, False) for row in batch]
                continue
            chunk = []
            for row in batch:
                meta = wanted.get(row[width])
                if meta is not None:
                    previous, shared, fingerprint = meta
                    chunk.append(DeltaRow(as_dict(row), row[width], fingerprint, previous, shared))
            yield chunk

    def _streamed(self, connection, duck) -> Iterator[list[DeltaRow]]:
        """Stream the whole model once; keep the rows `larder_wanted` names and those without a key."""
        yield from _wanted_rows(self._dialect, connection, duck, self._row_query(), self._chunk_size, "larder_wanted")

    def _gone(self, duck) -> Iterator[list[DeltaRow]]:
        yield from _gone_rows(duck, "", self._chunk_size)


class SplitKeyedDelta(KeyedDelta):
    """A KeyedDelta that can also be read in parts, each from its own process (see the module's
    docstring): for a warehouse whose dialect exports transaction snapshots."""

    @contextmanager
    def split(self, parts: int, on_wait: Callable[[], None] | None = None) -> Iterator[list[KeyedPart]]:
        """`parts` deltas whose chunks, together, are this delta's (the rows always streamed);
        `snapshot_size` is set on entry. The transaction whose view the parts import stays open
        until the block ends."""
        with tempfile.TemporaryDirectory(prefix="larder-delta-") as folder, \
                self._warehouse.connection(consistent=True) as connection:
            path = os.path.join(folder, "delta.duckdb")
            with duckdb.connect(path, config={"temp_directory": folder, "memory_limit": DUCKDB_MEMORY}) as duck:
                duck.execute("set enable_progress_bar = false")
                for _ in self._load(connection, duck, folder):
                    if on_wait is not None:
                        on_wait()
                self._mark_wanted(duck)
            view = self._dialect.export_snapshot(connection)
            yield [KeyedPart(self._warehouse.url, self._row_query(self._part_filter(index, parts)), path, view,
                             min(self._chunk_size, PART_CHUNK_ROWS), gone=index == 0)
                   for index in range(parts)]

    def _part_filter(self, index: int, parts: int) -> str:
        key = self._keys[0]
        where = f"where {self._dialect.hash_bucket(key, parts)} = {int(index)}"
        return f"{where} or {key} is null" if index == 0 else where


class KeyedPart:
    """One part of a SplitKeyedDelta, read in a worker process: its rows of the model, streamed in a
    transaction that sees the view the whole delta was fingerprinted in, kept if `larder_wanted` (in
    the DuckDB file at `path`) names them; the first part also yields the records whose row left."""

    def __init__(self, url: str, query: str, path: str, view: str, chunk_size: int, *, gone: bool):
        self._url, self._query, self._path, self._view = url, query, path, view
        self._chunk_size, self._gone = chunk_size, gone

    def __iter__(self) -> Iterator[list[DeltaRow]]:
        from orchestration.sync.warehouse.sqlalchemy import SqlWarehouse

        warehouse = SqlWarehouse(self._url)
        try:
            with duckdb.connect(":memory:") as duck, warehouse.connection(consistent=True, view=self._view) as connection:
                duck.execute("set enable_progress_bar = false")
                duck.execute("set threads = 1")  # one of several processes: together they use every core, not more
                path = self._path.replace("'", "''")
                duck.execute(f"attach '{path}' as larder_delta (read_only)")
                yield from _wanted_rows(warehouse.dialect, connection, duck, self._query, self._chunk_size,
                                        "larder_delta.larder_wanted")
                if self._gone:
                    yield from _gone_rows(duck, "larder_delta.", self._chunk_size)
        finally:
            warehouse.dispose()


def _wanted_rows(dialect, connection, duck, query: str, chunk_size: int, wanted: str) -> Iterator[list[DeltaRow]]:
    """The rows of `query` (model columns, then the primary key) that the `wanted` table names, with
    its fingerprint and flags, and those without a key."""
    description, batches = dialect.stream(connection, query, None, chunk_size)
    as_dict = None
    for batch in batches:
        width = len(batch[0]) - 1
        as_dict = as_dict or dialect.row_reader(description()[:width])
        keys = [row[width] for row in batch]
        chunk = [DeltaRow(as_dict(row), None, None, None, False) for row in batch if row[width] is None]
        duck.register("larder_chunk", {
            "i": np.arange(len(batch), dtype=np.int64),
            "pk": np.array(keys, dtype=object),
        })
        matches = duck.execute(
            f"select c.i, w.previous, w.shared, w.fp from larder_chunk as c join {wanted} as w on c.pk = w.pk"
        ).fetchall()
        duck.unregister("larder_chunk")
        for i, previous, shared, fingerprint in matches:
            row = batch[i]
            chunk.append(DeltaRow(as_dict(row), row[width], fingerprint, previous, shared))
        yield chunk


def _gone_rows(duck, schema: str, chunk_size: int) -> Iterator[list[DeltaRow]]:
    """The snapshot's records whose primary key no row of the model has."""
    result = duck.execute(f"""
        select s.pk, s.fp from {schema}larder_snapshot as s
        where not exists (select 1 from {schema}larder_keys as m where m.k0 = s.pk)
    """)
    while part := result.fetchmany(chunk_size):
        yield [DeltaRow(None, pk, None, previous, False) for pk, previous in part]
