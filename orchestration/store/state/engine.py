"""The state's engine and dialects: the one place that knows SQLite from Postgres.

Connection bounds (a sync's and the API's), SQLite's pragmas, Postgres' timeouts, and the
upsert statements each dialect runs.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection, Dialect, Engine

T = TypeVar("T")


@dataclass(frozen=True)
class EngineBounds:
    """How long any use of the state may wait (see `make_engine`)."""

    connect_timeout: float
    statement_timeout: float | None = None
    io_timeout: float | None = None


# The sync engine's: a run's statements may be long (a snapshot of a million rows), and it waits
# for locks a concurrent run holds.
SYNC_CONNECT_TIMEOUT = 10.0
SYNC_BUSY_TIMEOUT = 30.0
SYNC_BOUNDS = EngineBounds(connect_timeout=SYNC_CONNECT_TIMEOUT)
SQLITE_PAGE_SIZE = 16_384
# The API's: far shorter, a request waits on them (serving/state_reads.py adds its own deadline).
API_BOUNDS = EngineBounds(
    connect_timeout=2.0,  # libpq's least
    statement_timeout=1.0,  # on the server (Postgres statement_timeout; SQLite busy timeout)
    io_timeout=2.0,  # the client gives up on a connection whose server stopped answering
)


def make_engine(
    url: str,
    *,
    connect_timeout: float = SYNC_CONNECT_TIMEOUT,
    statement_timeout: float | None = None,
    io_timeout: float | None = None,
) -> Engine:
    """An engine for the state URL, with bounds on how long any use of it may wait.

    - `connect_timeout`: seconds to open a connection (Postgres: libpq's `connect_timeout`, at
      least 2; SQLite opens files at once).
    - `statement_timeout`: seconds a statement may run on the server (Postgres: its
      `statement_timeout`; SQLite: how long to wait for a lock, the busy timeout, 30 s if None).
      None leaves Postgres' own setting.
    - `io_timeout` (Postgres): seconds the client waits for each answer of the server before it
      closes the connection and raises; a server that accepts connections and never answers
      (partitioned, frozen) cannot cancel statements itself. None waits as long as it takes.

    SQLite gets WAL so the API reads while a sync writes.
    """
    if url.startswith("sqlite"):
        return _sqlite_engine(url, statement_timeout if statement_timeout is not None else SYNC_BUSY_TIMEOUT)
    engine = sa.create_engine(url, pool_pre_ping=True)
    if engine.dialect.name == "postgresql" and engine.dialect.driver == "psycopg":
        _bound_postgres(engine, connect_timeout, statement_timeout, io_timeout)
    return engine


def bounded_engine(url: str, bounds: EngineBounds) -> Engine:
    return make_engine(url, connect_timeout=bounds.connect_timeout, statement_timeout=bounds.statement_timeout,
                       io_timeout=bounds.io_timeout)


def _sqlite_engine(url: str, busy_timeout: float) -> Engine:
    engine = sa.create_engine(url, connect_args={"timeout": busy_timeout, "check_same_thread": False})

    @event.listens_for(engine, "connect")
    def _sqlite_pragmas(dbapi_connection, _record):
        cursor = dbapi_connection.cursor()
        # 16 KB pages for a database this creates (before WAL, which fixes the size; an existing
        # database keeps its own): a sync's inserts split and rewrite a quarter as many pages, and
        # SQLite inserting a million records took 8.1 s instead of 9.8 s with 4 KB pages.
        cursor.execute(f"PRAGMA page_size={SQLITE_PAGE_SIZE}")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        # 64 MB of page cache (default 2 MB): a sync's inserts land all over the key indexes.
        cursor.execute("PRAGMA cache_size=-65536")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout * 1000)}")
        cursor.close()

    return engine


def _bound_postgres(engine: Engine, connect_timeout: float, statement_timeout: float | None,
                    io_timeout: float | None) -> None:
    connection_class = _connection_with_io_timeout(io_timeout) if io_timeout is not None else None

    @event.listens_for(engine, "do_connect")
    def _connect_with_timeouts(dialect, _record, cargs, cparams):
        cparams["connect_timeout"] = max(2, math.ceil(connect_timeout))  # libpq's minimum is 2 s
        if statement_timeout is not None:
            # Appended to any options of the URL (e.g. a search_path): the last setting wins.
            setting = f"-c statement_timeout={max(1, int(statement_timeout * 1000))}"
            cparams["options"] = f"{cparams.get('options', '')} {setting}".strip()
        if connection_class is not None:
            return connection_class.connect(*cargs, **cparams)
        return None


@functools.cache
def _connection_with_io_timeout(io_timeout: float) -> Any:
    """A psycopg connection class whose every wait for the server gives up after `io_timeout` s."""
    import psycopg

    # psycopg raises this (an OperationalError) when a wait's timeout expires.
    wait_timeout = getattr(psycopg.errors, "_WaitTimeout", psycopg.OperationalError)

    class ConnectionWithIoTimeout(psycopg.Connection):
        def wait(self, gen, interval=0.1, timeout=None):
            try:
                return super().wait(gen, interval=interval, timeout=io_timeout if timeout is None else timeout)
            except wait_timeout:
                # Mid-exchange: the connection's state is unknown, so it is closed (the pool drops it).
                self.close()
                raise psycopg.OperationalError(f"the state store did not answer within {io_timeout:g} s") from None

    return ConnectionWithIoTimeout


def batches(items: Sequence[T] | Iterator[T], size: int = 500) -> Iterator[list[T]]:
    """`items` in lists of at most `size` (an IN list per statement stays within every driver's limits)."""
    items = list(items)
    for start in range(0, len(items), size):
        yield items[start : start + size]


def dialect_insert(conn: Connection) -> Any:
    """The insert construct with ON CONFLICT support for the state's database."""
    if conn.dialect.name == "sqlite":
        return sqlite_insert
    if conn.dialect.name == "postgresql":
        return postgresql_insert
    raise NotImplementedError(f"state store on {conn.dialect.name!r} is not supported (use sqlite or postgresql)")


def upsert(conn: Connection, table: sa.Table, rows: Sequence[tuple], key: tuple[str, ...]) -> None:
    """Insert or replace rows (tuples in the table's column order) by `key`."""
    if rows:
        _executemany(conn, _compiled_insert(conn.dialect, table, key), rows)


def insert_missing(conn: Connection, table: sa.Table, rows: Sequence[tuple]) -> None:
    """Insert rows (tuples in the table's column order), skipping those whose primary key exists."""
    if rows:
        _executemany(conn, _compiled_insert(conn.dialect, table, None), rows)


@dataclass(frozen=True)
class _Compiled:
    sql: str
    columns: tuple[str, ...]  # the table's, in order: what each row tuple holds
    positions: tuple[int, ...] | None  # positional paramstyle: the row index of each parameter


def _executemany(conn: Connection, compiled: _Compiled, rows: Sequence[tuple]) -> None:
    # One executemany of plain rows straight to the driver: SQLAlchemy's per-row parameter
    # processing cost more than the database's own work.
    if compiled.positions is None:
        columns = compiled.columns
        conn.exec_driver_sql(compiled.sql, [dict(zip(columns, row)) for row in rows])
    elif compiled.positions == tuple(range(len(compiled.columns))):
        conn.exec_driver_sql(compiled.sql, list(rows))
    else:
        positions = compiled.positions
        conn.exec_driver_sql(compiled.sql, [tuple(row[i] for i in positions) for row in rows])


@functools.cache
def _compiled_insert(dialect: Dialect, table: sa.Table, key: tuple[str, ...] | None) -> _Compiled:
    """INSERT ... ON CONFLICT: DO UPDATE by `key`, or DO NOTHING without one; compiled once per dialect."""
    if dialect.name == "sqlite":
        insert: Any = sqlite_insert
    elif dialect.name == "postgresql":
        insert = postgresql_insert
    else:
        raise NotImplementedError(f"state store on {dialect.name!r} is not supported (use sqlite or postgresql)")
    columns = tuple(c.name for c in table.columns)
    statement = insert(table).values({name: sa.bindparam(name) for name in columns})
    if key is None:
        statement = statement.on_conflict_do_nothing()
    else:
        statement = statement.on_conflict_do_update(
            index_elements=list(key),
            set_={name: statement.excluded[name] for name in columns if name not in key},
        )
    compiled = statement.compile(dialect=dialect)
    positions = None
    if compiled.positional:
        positions = tuple(columns.index(name) for name in compiled.positiontup or ())
    return _Compiled(str(compiled), columns, positions)
