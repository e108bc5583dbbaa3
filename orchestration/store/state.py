"""Durable state (SQLAlchemy; SQLite by default, Postgres by URL): the schema and `StateStore`.

The state is the source of truth for what the API serves. Memcached is rebuilt from it:
- `record_fields`: each sync's current fields of each record, with the hash the diff compares
  (the snapshot), enough to compose and rehydrate every record;
- `record_indices`: every cache key a record answers to, so old index values can be removed
  and a cache miss can be resolved to its record;
- `sync_runs`: run history with counts, durations and rejection samples;
- `cache_journal`: cache work committed to state but not yet confirmed written to Memcached,
  replayed by the next run after a crash;
- `region_pending_keys`: cache keys a region is owed because a run left it out (limited to other
  regions, or the region was disabled): written by the next run or rehydrate that covers it;
- `record_tombstones`: records a `delete: delete` sync removed from a merged collection; they
  answer 404 whatever the other syncs hold until that sync's model has the row again;
- `collection_leases`: which run may write each collection now (one at a time, see
  `orchestration/sync/lease.py`);
- `api_keys`: hashed API keys with their scopes.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import math
import operator
import secrets
import time
from collections import defaultdict
from dataclasses import asdict, dataclass
from typing import Any, Iterable, Iterator, Sequence

import orjson
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from orchestration.store import envelope


class Base(DeclarativeBase):
    pass


class RecordFields(Base):
    __tablename__ = "record_fields"
    sync_name: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    pk: Mapped[str] = mapped_column(sa.String(512), primary_key=True)
    collection: Mapped[str] = mapped_column(sa.String(64))
    fields: Mapped[bytes] = mapped_column(sa.LargeBinary)
    row_hash: Mapped[int] = mapped_column(sa.BigInteger)
    updated_at: Mapped[int] = mapped_column(sa.BigInteger)
    __table_args__ = (sa.Index("ix_record_fields_collection_pk", "collection", "pk"),)


class RecordIndex(Base):
    __tablename__ = "record_indices"
    cache_key: Mapped[str] = mapped_column(sa.String(250), primary_key=True)
    collection: Mapped[str] = mapped_column(sa.String(64))
    pk: Mapped[str] = mapped_column(sa.String(512))
    sync_name: Mapped[str] = mapped_column(sa.String(64))
    # WITHOUT ROWID on SQLite: the cache_key b-tree is the table, one b-tree less per key written.
    # Databases created before keep their rowid table; both work the same.
    __table_args__ = (sa.Index("ix_record_indices_collection_pk", "collection", "pk"), {"sqlite_with_rowid": False})


class SyncRun(Base):
    __tablename__ = "sync_runs"
    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    sync_name: Mapped[str] = mapped_column(sa.String(64), index=True)
    status: Mapped[str] = mapped_column(sa.String(16))  # running · succeeded · failed
    full_resync: Mapped[bool] = mapped_column(sa.Boolean)
    started_at: Mapped[float] = mapped_column(sa.Float)
    heartbeat_at: Mapped[float] = mapped_column(sa.Float)
    finished_at: Mapped[float | None] = mapped_column(sa.Float, nullable=True)
    regions: Mapped[list] = mapped_column(sa.JSON, default=list)
    counts: Mapped[dict] = mapped_column(sa.JSON, default=dict)
    rejection_samples: Mapped[list] = mapped_column(sa.JSON, default=list)
    error: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    origin: Mapped[str] = mapped_column(sa.String(128), default="")


class CacheJournal(Base):
    __tablename__ = "cache_journal"
    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[int] = mapped_column(sa.Integer, index=True)
    sync_name: Mapped[str] = mapped_column(sa.String(64), index=True)
    collection: Mapped[str] = mapped_column(sa.String(64))
    stale_keys: Mapped[list] = mapped_column(sa.JSON)
    pks: Mapped[list] = mapped_column(sa.JSON)


class RegionPendingKey(Base):
    """A cache key a region has not been written since its record changed or went."""

    __tablename__ = "region_pending_keys"
    region: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    collection: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    cache_key: Mapped[str] = mapped_column(sa.String(250), primary_key=True)
    __table_args__ = ({"sqlite_with_rowid": False},)


class RecordTombstone(Base):
    """A record a sync with `delete: delete` removed: hidden while the row is absent from its model."""

    __tablename__ = "record_tombstones"
    collection: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    pk: Mapped[str] = mapped_column(sa.String(512), primary_key=True)
    sync_name: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    deleted_at: Mapped[float] = mapped_column(sa.Float)
    __table_args__ = ({"sqlite_with_rowid": False},)


class CollectionLeaseRow(Base):
    __tablename__ = "collection_leases"
    collection: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    token: Mapped[str] = mapped_column(sa.String(32))  # the holder's random id: only it renews or releases
    holder: Mapped[str] = mapped_column(sa.String(256))  # who holds it, for the message a waiting run gives
    run_id: Mapped[int | None] = mapped_column(sa.Integer, nullable=True)
    host: Mapped[str] = mapped_column(sa.String(255))
    pid: Mapped[int] = mapped_column(sa.Integer)
    expires_at: Mapped[float] = mapped_column(sa.Float)


class ApiKey(Base):
    __tablename__ = "api_keys"
    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(sa.String(128), unique=True)
    prefix: Mapped[str] = mapped_column(sa.String(16), unique=True)
    secret_hash: Mapped[str] = mapped_column(sa.String(64))
    collections: Mapped[list | None] = mapped_column(sa.JSON, nullable=True)
    regions: Mapped[list | None] = mapped_column(sa.JSON, nullable=True)
    rate_limit: Mapped[float | None] = mapped_column(sa.Float, nullable=True)
    created_at: Mapped[float] = mapped_column(sa.Float)
    revoked_at: Mapped[float | None] = mapped_column(sa.Float, nullable=True)


FIELDS = RecordFields.__table__
INDICES = RecordIndex.__table__
RUNS = SyncRun.__table__
JOURNAL = CacheJournal.__table__
LEASES = CollectionLeaseRow.__table__
PENDING = RegionPendingKey.__table__
TOMBSTONES = RecordTombstone.__table__
KEYS = ApiKey.__table__

KEY_PREFIX = "lk"
# Indexes earlier versions created; each one cost every sync a b-tree insert per row.
RETIRED_INDEXES = ("ix_record_indices_sync",)


@dataclass(frozen=True)
class KeyInfo:
    """An API key as listed: never its secret."""

    name: str
    prefix: str
    secret_hash: str
    collections: tuple[str, ...] | None
    regions: tuple[str, ...] | None
    rate_limit: float | None
    created_at: float
    revoked_at: float | None


@dataclass(frozen=True)
class FieldsRow:
    sync_name: str
    fields: bytes
    updated_at: int


@dataclass(frozen=True)
class Lease:
    """A collection's lease as stored: who holds it and until when (epoch seconds)."""

    collection: str
    token: str
    holder: str
    run_id: int | None
    host: str
    pid: int
    expires_at: float


class UnknownApiKey(LookupError):
    """No API key by that name."""


def hash_secret(secret: str) -> str:
    # Secrets are 256-bit random tokens, so a fast hash is enough; there is nothing to brute-force.
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def split_secret(secret: str) -> str | None:
    """The lookup prefix of a presented secret (`lk_<prefix>_<token>`), or None if malformed."""
    parts = secret.split("_", 2)  # the token itself may contain "_"
    if len(parts) != 3 or parts[0] != KEY_PREFIX or len(parts[1]) != 8 or not parts[2]:
        return None
    return parts[1]


def secret_matches(secret: str, stored_hash: str) -> bool:
    return hmac.compare_digest(hash_secret(secret), stored_hash)


# The sync engine's defaults: a run's statements may be long (a snapshot of a million rows), and
# it waits for locks a concurrent run holds. The API passes far shorter bounds (serving/app.py).
SYNC_CONNECT_TIMEOUT = 10.0
SYNC_BUSY_TIMEOUT = 30.0


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
        busy_timeout = statement_timeout if statement_timeout is not None else SYNC_BUSY_TIMEOUT
        engine = sa.create_engine(url, connect_args={"timeout": busy_timeout, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record):
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            # 64 MB of page cache (default 2 MB): a sync's inserts land all over the key indexes.
            cursor.execute("PRAGMA cache_size=-65536")
            cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout * 1000)}")
            cursor.close()

        return engine
    engine = sa.create_engine(url, pool_pre_ping=True)
    if engine.dialect.name == "postgresql" and engine.dialect.driver == "psycopg":
        _bound_postgres(engine, connect_timeout, statement_timeout, io_timeout)
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


@functools.lru_cache(maxsize=None)
def _connection_with_io_timeout(io_timeout: float):
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


def merge_fields(rows: Iterable[bytes]) -> dict[str, Any]:
    """The record a collection serves: the union of each sync's (disjoint) fields."""
    record: dict[str, Any] = {}
    for fields in rows:
        _deep_merge(record, orjson.loads(fields))
    return record


def _deep_merge(into: dict, other: dict) -> None:
    for key, value in other.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _deep_merge(into[key], value)
        else:
            into[key] = value


class StateStore:
    """Everything Larder keeps durably, behind small named operations."""

    def __init__(self, url: str, *, engine: Engine | None = None):
        self.url = url
        self.engine = engine or make_engine(url)

    def create_all(self) -> None:
        """Create what is missing, and drop what earlier versions made and nothing reads any more."""
        Base.metadata.create_all(self.engine)
        with self.engine.begin() as conn:
            for index in RETIRED_INDEXES:
                conn.exec_driver_sql(f"drop index if exists {index}")

    def dispose(self) -> None:
        self.engine.dispose()

    def ping(self) -> None:
        """Raise unless the state store answers a trivial query."""
        with self.engine.connect() as conn:
            conn.exec_driver_sql("select 1")

    def begin(self):
        return self.engine.begin()

    # --- API keys -----------------------------------------------------------------------

    def create_key(
        self,
        name: str,
        *,
        collections: Sequence[str] | None = None,
        regions: Sequence[str] | None = None,
        rate_limit: float | None = None,
    ) -> tuple[KeyInfo, str]:
        """Store a new key; returns it and its secret, which is never stored or shown again."""
        prefix = secrets.token_hex(4)
        secret = f"{KEY_PREFIX}_{prefix}_{secrets.token_urlsafe(32)}"
        row = {
            "name": name,
            "prefix": prefix,
            "secret_hash": hash_secret(secret),
            "collections": list(collections) if collections else None,
            "regions": list(regions) if regions else None,
            "rate_limit": rate_limit,
            "created_at": time.time(),
            "revoked_at": None,
        }
        with self.engine.begin() as conn:
            if conn.execute(sa.select(KEYS.c.id).where(KEYS.c.name == name)).first():
                raise ValueError(f"an API key named {name!r} already exists")
            conn.execute(KEYS.insert().values(**row))
        return _key_info(row), secret

    def list_keys(self, *, include_revoked: bool = True) -> list[KeyInfo]:
        query = sa.select(KEYS).order_by(KEYS.c.created_at)
        if not include_revoked:
            query = query.where(KEYS.c.revoked_at.is_(None))
        with self.engine.connect() as conn:
            return [_key_info(row._mapping) for row in conn.execute(query)]

    def revoke_key(self, name: str) -> KeyInfo:
        with self.engine.begin() as conn:
            updated = conn.execute(
                KEYS.update()
                .where(sa.or_(KEYS.c.name == name, KEYS.c.prefix == name), KEYS.c.revoked_at.is_(None))
                .values(revoked_at=time.time())
            )
            row = conn.execute(
                sa.select(KEYS).where(sa.or_(KEYS.c.name == name, KEYS.c.prefix == name))
            ).first()
        if row is None:
            raise UnknownApiKey(f"no API key named {name!r}")
        if updated.rowcount == 0 and row.revoked_at is None:
            raise UnknownApiKey(f"no API key named {name!r}")
        return _key_info(row._mapping)

    # --- sync runs ------------------------------------------------------------------------

    def start_run(self, sync_name: str, *, full_resync: bool, regions: Sequence[str], origin: str = "") -> int:
        now = time.time()
        with self.engine.begin() as conn:
            result = conn.execute(
                RUNS.insert().values(
                    sync_name=sync_name,
                    status="running",
                    full_resync=full_resync,
                    started_at=now,
                    heartbeat_at=now,
                    regions=list(regions),
                    counts={},
                    rejection_samples=[],
                    origin=origin,
                )
            )
            return int(result.inserted_primary_key[0])

    def heartbeat(self, run_id: int, counts: dict[str, int]) -> None:
        with self.engine.begin() as conn:
            conn.execute(RUNS.update().where(RUNS.c.id == run_id).values(heartbeat_at=time.time(), counts=counts))

    def finish_run(
        self,
        run_id: int,
        *,
        status: str,
        counts: dict[str, int],
        rejection_samples: list[dict] | None = None,
        error: str | None = None,
    ) -> None:
        now = time.time()
        with self.engine.begin() as conn:
            conn.execute(
                RUNS.update()
                .where(RUNS.c.id == run_id)
                .values(
                    status=status,
                    finished_at=now,
                    heartbeat_at=now,
                    counts=counts,
                    rejection_samples=rejection_samples or [],
                    error=error,
                )
            )

    def recent_runs(self, sync_name: str, limit: int = 20) -> list[dict[str, Any]]:
        query = sa.select(RUNS).where(RUNS.c.sync_name == sync_name).order_by(RUNS.c.id.desc()).limit(limit)
        with self.engine.connect() as conn:
            return [dict(row._mapping) for row in conn.execute(query)]

    def last_run(self, sync_name: str) -> dict[str, Any] | None:
        runs = self.recent_runs(sync_name, limit=1)
        return runs[0] if runs else None

    def mark_abandoned_runs(self, sync_name: str, *, stale_after: float) -> int:
        """Runs still 'running' with no heartbeat for `stale_after` seconds died: mark them failed."""
        cutoff = time.time() - stale_after
        with self.engine.begin() as conn:
            result = conn.execute(
                RUNS.update()
                .where(RUNS.c.sync_name == sync_name, RUNS.c.status == "running", RUNS.c.heartbeat_at < cutoff)
                .values(status="failed", finished_at=time.time(), error="abandoned: the run stopped without finishing")
            )
            return result.rowcount

    def fail_overtaken_run(self, run_id: int, error: str) -> bool:
        """Mark a run that is still 'running' failed (another run took its lease); True if it was."""
        now = time.time()
        with self.engine.begin() as conn:
            result = conn.execute(
                RUNS.update()
                .where(RUNS.c.id == run_id, RUNS.c.status == "running")
                .values(status="failed", finished_at=now, heartbeat_at=now, error=error)
            )
            return result.rowcount == 1

    def running_runs(self, sync_name: str) -> list[int]:
        query = sa.select(RUNS.c.id).where(RUNS.c.sync_name == sync_name, RUNS.c.status == "running")
        with self.engine.connect() as conn:
            return [row.id for row in conn.execute(query)]

    # --- snapshot and record fields --------------------------------------------------------

    def snapshot(self, sync_name: str) -> dict[str, int]:
        """pk → row hash of everything the sync has written."""
        query = sa.select(FIELDS.c.pk, FIELDS.c.row_hash).where(FIELDS.c.sync_name == sync_name)
        with self.engine.connect() as conn:
            return {pk: row_hash for pk, row_hash in conn.execute(query)}

    def iter_snapshot(self, sync_name: str, batch: int = 100_000) -> Iterator[list[tuple[str, int]]]:
        """(pk, row hash) of everything the sync has written, streamed in batches."""
        query = sa.select(FIELDS.c.pk, FIELDS.c.row_hash).where(FIELDS.c.sync_name == sync_name)
        with self.engine.connect() as conn:
            if conn.dialect.name == "sqlite":
                # Plain tuples from the driver (sqlite3 steps lazily): neither column needs
                # SQLAlchemy's result processing, which would cost more than reading.
                cursor = conn.connection.driver_connection.execute(
                    "select pk, row_hash from record_fields where sync_name = ?", (sync_name,)
                )
                while rows := cursor.fetchmany(batch):
                    yield rows
                return
            result = conn.execution_options(stream_results=True, yield_per=batch).execute(query)
            for part in result.partitions(batch):
                yield [tuple(row) for row in part]

    def sync_fields_of(self, sync_name: str, pks: Sequence[str]) -> dict[str, bytes]:
        """pk → the fields the sync last wrote, for the given records it has written."""
        found: dict[str, bytes] = {}
        with self.engine.connect() as conn:
            if conn.dialect.name == "sqlite":
                # Plain tuples from the driver: SQLAlchemy's parameter and row processing cost as
                # much as SQLite's own lookups (a diff asks for every record whose inputs changed).
                driver = conn.connection.driver_connection
                for batch in _batches(pks, 500):
                    marks = ",".join("?" * len(batch))
                    found.update(driver.execute(
                        f"select pk, fields from record_fields where sync_name = ? and pk in ({marks})",
                        (sync_name, *batch),
                    ).fetchall())
                return found
            for batch in _batches(pks, 500):
                query = sa.select(FIELDS.c.pk, FIELDS.c.fields).where(
                    FIELDS.c.sync_name == sync_name, FIELDS.c.pk.in_(batch)
                )
                found.update((row.pk, bytes(row.fields)) for row in conn.execute(query))
        return found

    def fields_of(self, conn: Connection, collection: str, pks: Sequence[str]) -> dict[str, list[FieldsRow]]:
        """Every sync's fields of the given records."""
        found: dict[str, list[FieldsRow]] = defaultdict(list)
        for batch in _batches(pks, 500):
            query = sa.select(FIELDS.c.pk, FIELDS.c.sync_name, FIELDS.c.fields, FIELDS.c.updated_at).where(
                FIELDS.c.collection == collection, FIELDS.c.pk.in_(batch)
            )
            for row in conn.execute(query):
                found[row.pk].append(FieldsRow(row.sync_name, row.fields, row.updated_at))
        return found

    def index_keys_of(self, conn: Connection, collection: str, pks: Sequence[str]) -> dict[str, list[str]]:
        """Every cache key the given records answer to."""
        found: dict[str, list[str]] = defaultdict(list)
        for batch in _batches(pks, 500):
            query = sa.select(INDICES.c.pk, INDICES.c.cache_key).where(
                INDICES.c.collection == collection, INDICES.c.pk.in_(batch)
            )
            for row in conn.execute(query):
                found[row.pk].append(row.cache_key)
        return found

    def sync_index_keys_of(self, conn: Connection, sync_name: str, collection: str, pks: Sequence[str]) -> dict[str, set[str]]:
        found: dict[str, set[str]] = defaultdict(set)
        for batch in _batches(pks, 500):
            # sync_name is filtered here, not in SQL: with it in the WHERE clause SQLite picks the
            # sync_name index and scans every key of the sync for each batch.
            query = sa.select(INDICES.c.pk, INDICES.c.cache_key, INDICES.c.sync_name).where(
                INDICES.c.collection == collection, INDICES.c.pk.in_(batch)
            )
            for row in conn.execute(query):
                if row.sync_name == sync_name:
                    found[row.pk].add(row.cache_key)
        return found

    def pks_of_keys(self, conn: Connection, collection: str, cache_keys: Sequence[str]) -> set[str]:
        """The records of the collection that the given cache keys (still) belong to."""
        found: set[str] = set()
        for batch in _batches(cache_keys, 500):
            query = sa.select(INDICES.c.pk).where(INDICES.c.collection == collection, INDICES.c.cache_key.in_(batch))
            found.update(row.pk for row in conn.execute(query))
        return found

    def upsert_fields(self, conn: Connection, rows: list[dict[str, Any]]) -> None:
        """rows: sync_name, pk, collection, fields, row_hash, updated_at."""
        if rows:
            _upsert(conn, FIELDS, rows, ("sync_name", "pk"))

    def delete_fields(self, conn: Connection, sync_name: str, pks: Sequence[str]) -> None:
        for batch in _batches(pks, 500):
            conn.execute(FIELDS.delete().where(FIELDS.c.sync_name == sync_name, FIELDS.c.pk.in_(batch)))

    def delete_record(self, conn: Connection, collection: str, pks: Sequence[str]) -> None:
        """Remove every sync's fields and every index entry of the given records."""
        for batch in _batches(pks, 500):
            conn.execute(FIELDS.delete().where(FIELDS.c.collection == collection, FIELDS.c.pk.in_(batch)))
            conn.execute(INDICES.delete().where(INDICES.c.collection == collection, INDICES.c.pk.in_(batch)))

    def upsert_index_keys(self, conn: Connection, rows: list[dict[str, Any]]) -> None:
        """rows: cache_key, collection, pk, sync_name."""
        if rows:
            _upsert(conn, INDICES, rows, ("cache_key",))

    def delete_index_keys(self, conn: Connection, keys: Sequence[str]) -> None:
        for batch in _batches(keys, 500):
            conn.execute(INDICES.delete().where(INDICES.c.cache_key.in_(batch)))

    # --- reading records (API fallback, rehydrate) -----------------------------------------

    def resolve(self, cache_key: str) -> tuple[str, str] | None:
        """(collection, pk) of the record a cache key belongs to."""
        query = sa.select(INDICES.c.collection, INDICES.c.pk).where(INDICES.c.cache_key == cache_key)
        with self.engine.connect() as conn:
            row = conn.execute(query).first()
        return (row.collection, row.pk) if row else None

    def compose(self, conn: Connection, collection: str, pks: Sequence[str], order: Sequence[str]) -> dict[str, bytes]:
        """pk → packed envelope of the record as the collection serves it; a record that does not
        exist, or that a `delete` sync tombstoned, has none."""
        rank = {name: i for i, name in enumerate(order)}
        composed = {}
        hidden = self.tombstoned(conn, collection, pks, by=order)
        for pk, rows in self.fields_of(conn, collection, pks).items():
            if pk in hidden:
                continue
            rows.sort(key=lambda r: rank.get(r.sync_name, len(rank)))
            body = orjson.dumps(merge_fields(r.fields for r in rows))
            composed[pk] = envelope.pack(body, max(r.updated_at for r in rows))
        return composed

    def record_by_key(self, cache_key: str, order: Sequence[str]) -> tuple[bytes, list[str]] | None:
        """The packed record a cache key resolves to and all its keys, or None if it does not exist."""
        target = self.resolve(cache_key)
        if target is None:
            return None
        collection, pk = target
        with self.engine.connect() as conn:
            packed = self.compose(conn, collection, [pk], order).get(pk)
            keys = self.index_keys_of(conn, collection, [pk]).get(pk, [])
        return (packed, keys) if packed is not None else None

    def iter_collection_pks(self, collection: str, batch: int = 5_000) -> Iterator[list[str]]:
        query = (
            sa.select(FIELDS.c.pk).where(FIELDS.c.collection == collection).distinct().order_by(FIELDS.c.pk)
        )
        with self.engine.connect() as conn:
            result = conn.execution_options(stream_results=True, yield_per=batch).execute(query)
            for part in result.partitions(batch):
                yield [row.pk for row in part]

    def collections_with_records(self) -> list[str]:
        with self.engine.connect() as conn:
            return [row[0] for row in conn.execute(sa.select(FIELDS.c.collection).distinct())]

    # --- cache journal -----------------------------------------------------------------------

    def journal(self, conn: Connection, run_id: int, sync_name: str, collection: str, stale_keys: list[str], pks: list[str]) -> int:
        result = conn.execute(
            JOURNAL.insert().values(
                run_id=run_id, sync_name=sync_name, collection=collection, stale_keys=stale_keys, pks=pks
            )
        )
        return int(result.inserted_primary_key[0])

    def clear_journal(self, entry_ids: Sequence[int]) -> None:
        with self.engine.begin() as conn:
            for batch in _batches(entry_ids, 500):
                conn.execute(JOURNAL.delete().where(JOURNAL.c.id.in_(batch)))

    def run_regions(self, run_id: int) -> list[str]:
        """The regions a run wrote (empty for an unknown run)."""
        with self.engine.connect() as conn:
            regions = conn.execute(sa.select(RUNS.c.regions).where(RUNS.c.id == run_id)).scalar()
        return list(regions or [])

    def pending_journal(self, sync_name: str | None = None, *, collection: str | None = None) -> list[dict[str, Any]]:
        query = sa.select(JOURNAL).order_by(JOURNAL.c.id)
        if sync_name is not None:
            query = query.where(JOURNAL.c.sync_name == sync_name)
        if collection is not None:
            query = query.where(JOURNAL.c.collection == collection)
        with self.engine.connect() as conn:
            return [dict(row._mapping) for row in conn.execute(query)]

    def journal_collections(self) -> set[str]:
        """The collections with cache work pending in the journal."""
        with self.engine.connect() as conn:
            return {row[0] for row in conn.execute(sa.select(JOURNAL.c.collection).distinct())}

    def drop_journal_entry(self, conn: Connection, entry_id: int) -> None:
        conn.execute(JOURNAL.delete().where(JOURNAL.c.id == entry_id))

    # --- what regions are owed ------------------------------------------------------------------

    def owe(self, conn: Connection, regions: Sequence[str], collection: str, cache_keys: Iterable[str]) -> None:
        """Record that `regions` must still be written these keys of the collection (from state)."""
        keys = list(cache_keys)
        if regions and keys:
            conn.exec_driver_sql(
                _insert_ignore_sql(conn.dialect.name, conn.dialect.paramstyle, PENDING),
                [(region, collection, key) for region in regions for key in keys],
            )

    def iter_owed_keys(self, region: str, collection: str, batch: int = 2_000) -> Iterator[list[str]]:
        """The keys the region is owed in the collection, in batches (keyset pages: the caller may
        settle each batch before asking for the next)."""
        after = ""
        while True:
            query = (
                sa.select(PENDING.c.cache_key)
                .where(PENDING.c.region == region, PENDING.c.collection == collection, PENDING.c.cache_key > after)
                .order_by(PENDING.c.cache_key)
                .limit(batch)
            )
            with self.engine.connect() as conn:
                keys = [row.cache_key for row in conn.execute(query)]
            if not keys:
                return
            yield keys
            after = keys[-1]

    def settle(self, region: str, collection: str, cache_keys: Sequence[str]) -> None:
        """The region has been written these keys: it owes nothing more for them."""
        with self.engine.begin() as conn:
            for batch in _batches(cache_keys, 500):
                conn.execute(PENDING.delete().where(
                    PENDING.c.region == region, PENDING.c.collection == collection, PENDING.c.cache_key.in_(batch)
                ))

    def owed_collections(self, region: str) -> set[str]:
        """The collections with keys the region is owed."""
        with self.engine.connect() as conn:
            return {row[0] for row in conn.execute(sa.select(PENDING.c.collection).where(PENDING.c.region == region).distinct())}

    def forget_regions_except(self, regions: Sequence[str]) -> None:
        """Drop what regions no longer configured were owed: nobody will write them again."""
        unknown = PENDING.c.region.not_in(list(regions))
        with self.engine.connect() as conn:  # read first: most runs have nothing to forget, and need no write
            if conn.execute(sa.select(PENDING.c.region).where(unknown).limit(1)).first() is None:
                return
        with self.engine.begin() as conn:
            conn.execute(PENDING.delete().where(unknown))

    # --- tombstones -----------------------------------------------------------------------------

    def add_tombstones(self, conn: Connection, collection: str, sync_name: str, pks: Sequence[str]) -> None:
        if pks:
            now = time.time()
            conn.exec_driver_sql(
                _insert_ignore_sql(conn.dialect.name, conn.dialect.paramstyle, TOMBSTONES),
                [(collection, pk, sync_name, now) for pk in pks],
            )

    def lift_tombstones(self, conn: Connection, collection: str, sync_name: str, pks: Sequence[str]) -> None:
        for batch in _batches(pks, 500):
            conn.execute(TOMBSTONES.delete().where(
                TOMBSTONES.c.collection == collection, TOMBSTONES.c.sync_name == sync_name, TOMBSTONES.c.pk.in_(batch)
            ))

    def has_tombstones(self, collection: str, sync_name: str) -> bool:
        query = sa.select(TOMBSTONES.c.pk).where(
            TOMBSTONES.c.collection == collection, TOMBSTONES.c.sync_name == sync_name
        ).limit(1)
        with self.engine.connect() as conn:
            return conn.execute(query).first() is not None

    def tombstoned(self, conn: Connection, collection: str, pks: Sequence[str], *, by: Iterable[str]) -> set[str]:
        """The given records that the `delete` of one of the syncs `by` hides. A sync no longer
        configured cannot bring its row back, so its tombstones hide nothing."""
        syncs = set(by)
        found: set[str] = set()
        for batch in _batches(pks, 500):
            query = sa.select(TOMBSTONES.c.pk, TOMBSTONES.c.sync_name).where(
                TOMBSTONES.c.collection == collection, TOMBSTONES.c.pk.in_(batch)
            )
            found.update(row.pk for row in conn.execute(query) if row.sync_name in syncs)
        return found

    # --- collection leases ---------------------------------------------------------------------

    def acquire_lease(self, lease: Lease) -> bool:
        """Take the collection's lease if it is free or expired, in one statement; True if taken."""
        row = asdict(lease)
        with self.engine.begin() as conn:
            insert = _dialect_insert(conn)(LEASES).values(**row)
            statement = insert.on_conflict_do_update(
                index_elements=[LEASES.c.collection],
                set_={name: insert.excluded[name] for name in row if name != "collection"},
                where=LEASES.c.expires_at < time.time(),
            )
            # RETURNING, not rowcount: psycopg reports no rowcount for an upsert.
            return conn.execute(statement.returning(LEASES.c.token)).first() is not None

    def take_over_lease(self, previous_token: str, lease: Lease) -> bool:
        """Replace the lease held under `previous_token` (its holder is known dead); False if it changed hands."""
        with self.engine.begin() as conn:
            result = conn.execute(
                LEASES.update()
                .where(LEASES.c.collection == lease.collection, LEASES.c.token == previous_token)
                .values(**asdict(lease))
            )
            return result.rowcount == 1

    def renew_lease(self, collection: str, token: str, expires_at: float, conn: Connection | None = None) -> bool:
        """Extend a lease its holder still has; False if it expired and another run took it. With
        `conn`, inside that transaction: its writes then commit only if the lease was still held."""
        statement = (
            LEASES.update()
            .where(LEASES.c.collection == collection, LEASES.c.token == token)
            .values(expires_at=expires_at)
        )
        if conn is not None:
            return conn.execute(statement).rowcount == 1
        with self.engine.begin() as own:
            return own.execute(statement).rowcount == 1

    def release_lease(self, collection: str, token: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(LEASES.delete().where(LEASES.c.collection == collection, LEASES.c.token == token))

    def lease_of(self, collection: str) -> Lease | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(LEASES).where(LEASES.c.collection == collection)).first()
        return Lease(**row._mapping) if row else None

    # --- serving reads (the API's batch fallback and lineage; read-only) ----------------------

    def records_by_keys(self, cache_keys: Sequence[str], order: Sequence[str]) -> dict[str, tuple[bytes, list[str]]]:
        """cache key → (packed record, every key of that record), for the given keys that exist."""
        targets: dict[str, tuple[str, str]] = {}
        composed: dict[tuple[str, str], bytes] = {}
        all_keys: dict[tuple[str, str], list[str]] = {}
        with self.engine.connect() as conn:
            for batch in _batches(cache_keys, 500):
                query = sa.select(INDICES.c.cache_key, INDICES.c.collection, INDICES.c.pk).where(
                    INDICES.c.cache_key.in_(batch)
                )
                targets.update((row.cache_key, (row.collection, row.pk)) for row in conn.execute(query))
            pks_by_collection: dict[str, set[str]] = defaultdict(set)
            for collection, pk in targets.values():
                pks_by_collection[collection].add(pk)
            for collection, pks in pks_by_collection.items():
                for pk, packed in self.compose(conn, collection, sorted(pks), order).items():
                    composed[collection, pk] = packed
                for pk, keys in self.index_keys_of(conn, collection, sorted(pks)).items():
                    all_keys[collection, pk] = keys
        return {key: (composed[t], all_keys.get(t, [])) for key, t in targets.items() if t in composed}

    def last_run_with_status(self, sync_name: str, status: str) -> dict[str, Any] | None:
        """The newest run of a sync that ended with `status` (e.g. the last successful one)."""
        query = (
            sa.select(RUNS)
            .where(RUNS.c.sync_name == sync_name, RUNS.c.status == status)
            .order_by(RUNS.c.id.desc())
            .limit(1)
        )
        with self.engine.connect() as conn:
            row = conn.execute(query).first()
        return dict(row._mapping) if row else None


def _key_info(row) -> KeyInfo:
    return KeyInfo(
        name=row["name"],
        prefix=row["prefix"],
        secret_hash=row["secret_hash"],
        collections=tuple(row["collections"]) if row["collections"] else None,
        regions=tuple(row["regions"]) if row["regions"] else None,
        rate_limit=row["rate_limit"],
        created_at=row["created_at"],
        revoked_at=row["revoked_at"],
    )


def _batches(items: Sequence, size: int) -> Iterator[Sequence]:
    items = list(items)
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _dialect_insert(conn: Connection):
    """The insert construct with ON CONFLICT support for the state's database."""
    if conn.dialect.name == "sqlite":
        return sqlite_insert
    if conn.dialect.name == "postgresql":
        return postgresql_insert
    raise NotImplementedError(f"state store on {conn.dialect.name!r} is not supported (use sqlite or postgresql)")


def _upsert(conn: Connection, table: sa.Table, rows: list[dict[str, Any]], key: tuple[str, ...]) -> None:
    """Insert or replace rows by `key`, as one executemany of plain tuples straight to the driver:
    SQLAlchemy's per-row parameter processing cost more than the database's own work."""
    columns = [c.name for c in table.columns]
    as_tuple = operator.itemgetter(*columns)
    conn.exec_driver_sql(_upsert_sql(conn.dialect.name, conn.dialect.paramstyle, table, key), [as_tuple(r) for r in rows])


@functools.lru_cache(maxsize=None)
def _insert_ignore_sql(dialect: str, paramstyle: str, table: sa.Table) -> str:
    """Insert rows, skipping those whose primary key exists (SQLite and Postgres: ON CONFLICT DO NOTHING)."""
    if dialect not in ("sqlite", "postgresql"):
        raise NotImplementedError(f"state store on {dialect!r} is not supported (use sqlite or postgresql)")
    columns = [c.name for c in table.columns]
    mark = {"qmark": "?", "format": "%s", "pyformat": "%s"}[paramstyle]
    return (
        f"insert into {table.name} ({', '.join(columns)}) values ({', '.join(mark for _ in columns)}) "
        f"on conflict do nothing"
    )


@functools.lru_cache(maxsize=None)
def _upsert_sql(dialect: str, paramstyle: str, table: sa.Table, key: tuple[str, ...]) -> str:
    if dialect not in ("sqlite", "postgresql"):
        raise NotImplementedError(f"state store on {dialect!r} is not supported (use sqlite or postgresql)")
    columns = [c.name for c in table.columns]
    mark = {"qmark": "?", "format": "%s", "pyformat": "%s"}[paramstyle]
    updates = ", ".join(f"{c} = excluded.{c}" for c in columns if c not in key)
    return (
        f"insert into {table.name} ({', '.join(columns)}) values ({', '.join(mark for _ in columns)}) "
        f"on conflict ({', '.join(key)}) do update set {updates}"
    )
