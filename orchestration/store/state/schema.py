"""The state's tables (SQLAlchemy): the only place their columns are named outside the family modules.

- `record_fields`: each sync's current fields of each record, with the hash the diff compares
  (the snapshot), enough to compose and rehydrate every record;
- `record_indices`: every cache key a record answers to, so old index values can be removed
  and a cache miss can be resolved to its record;
- `record_tombstones`: records a `delete: delete` sync removed from a merged collection; they
  answer 404 whatever the other syncs hold until that sync's model has the row again;
- `sync_runs`: run history with counts, durations and rejection samples;
- `cache_journal`: cache work committed to state but not yet confirmed written to Memcached,
  replayed by the next run after a crash;
- `region_pending_keys`: cache keys a region is owed because a run left it out (limited to other
  regions, or the region was disabled): written by the next run or rehydrate that covers it;
- `collection_leases`: which run may write each collection now (one at a time, see
  `orchestration/sync/lease.py`);
- `api_keys`: hashed API keys with their scopes.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class RecordFieldsRow(Base):
    __tablename__ = "record_fields"
    sync_name: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    pk: Mapped[str] = mapped_column(sa.String(512), primary_key=True)
    collection: Mapped[str] = mapped_column(sa.String(64))
    fields: Mapped[bytes] = mapped_column(sa.LargeBinary)
    row_hash: Mapped[int] = mapped_column(sa.BigInteger)
    updated_at: Mapped[int] = mapped_column(sa.BigInteger)
    __table_args__ = (sa.Index("ix_record_fields_collection_pk", "collection", "pk"),)


class RecordIndexRow(Base):
    __tablename__ = "record_indices"
    cache_key: Mapped[str] = mapped_column(sa.String(250), primary_key=True)
    collection: Mapped[str] = mapped_column(sa.String(64))
    pk: Mapped[str] = mapped_column(sa.String(512))
    sync_name: Mapped[str] = mapped_column(sa.String(64))
    # WITHOUT ROWID on SQLite: the cache_key b-tree is the table, one b-tree less per key written.
    # Databases created before keep their rowid table; both work the same.
    __table_args__ = (sa.Index("ix_record_indices_collection_pk", "collection", "pk"), {"sqlite_with_rowid": False})


class RecordTombstoneRow(Base):
    """A record a sync with `delete: delete` removed: hidden while the row is absent from its model."""

    __tablename__ = "record_tombstones"
    collection: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    pk: Mapped[str] = mapped_column(sa.String(512), primary_key=True)
    sync_name: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    deleted_at: Mapped[float] = mapped_column(sa.Float)
    __table_args__ = ({"sqlite_with_rowid": False},)


class SyncRunRow(Base):
    __tablename__ = "sync_runs"
    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    sync_name: Mapped[str] = mapped_column(sa.String(64), index=True)
    status: Mapped[str] = mapped_column(sa.String(16))  # a RunStatus
    full_resync: Mapped[bool] = mapped_column(sa.Boolean)
    started_at: Mapped[float] = mapped_column(sa.Float)
    heartbeat_at: Mapped[float] = mapped_column(sa.Float)
    finished_at: Mapped[float | None] = mapped_column(sa.Float, nullable=True)
    regions: Mapped[list] = mapped_column(sa.JSON, default=list)
    counts: Mapped[dict] = mapped_column(sa.JSON, default=dict)
    rejection_samples: Mapped[list] = mapped_column(sa.JSON, default=list)
    error: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    origin: Mapped[str] = mapped_column(sa.String(128), default="")


class CacheJournalRow(Base):
    __tablename__ = "cache_journal"
    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[int] = mapped_column(sa.Integer, index=True)
    sync_name: Mapped[str] = mapped_column(sa.String(64), index=True)
    collection: Mapped[str] = mapped_column(sa.String(64))
    stale_keys: Mapped[list] = mapped_column(sa.JSON)
    pks: Mapped[list] = mapped_column(sa.JSON)


class RegionPendingKeyRow(Base):
    """A cache key a region has not been written since its record changed or went."""

    __tablename__ = "region_pending_keys"
    region: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    collection: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    cache_key: Mapped[str] = mapped_column(sa.String(250), primary_key=True)
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


class ApiKeyRow(Base):
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


FIELDS: sa.Table = RecordFieldsRow.__table__  # type: ignore[assignment]
INDICES: sa.Table = RecordIndexRow.__table__  # type: ignore[assignment]
TOMBSTONES: sa.Table = RecordTombstoneRow.__table__  # type: ignore[assignment]
RUNS: sa.Table = SyncRunRow.__table__  # type: ignore[assignment]
JOURNAL: sa.Table = CacheJournalRow.__table__  # type: ignore[assignment]
PENDING: sa.Table = RegionPendingKeyRow.__table__  # type: ignore[assignment]
LEASES: sa.Table = CollectionLeaseRow.__table__  # type: ignore[assignment]
KEYS: sa.Table = ApiKeyRow.__table__  # type: ignore[assignment]

# Indexes earlier versions created; each one cost every sync a b-tree insert per row.
RETIRED_INDEXES = ("ix_record_indices_sync",)


def create_all(engine: sa.Engine) -> None:
    """Create what is missing, and drop what earlier versions made and nothing reads any more."""
    Base.metadata.create_all(engine)
    with engine.begin() as conn:
        for index in RETIRED_INDEXES:
            conn.exec_driver_sql(f"drop index if exists {index}")
