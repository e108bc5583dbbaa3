"""Durable state (SQLAlchemy; SQLite by default, Postgres by URL): `StateStore`, one facade over
the table families.

The state is the source of truth for what the API serves; Memcached is rebuilt from it.

- `schema`: the tables (the only module naming their columns, with the family modules);
- `engine`: engines and dialects (SQLite pragmas, Postgres timeouts, the sync's and the API's bounds,
  the upserts);
- `records`: each sync's fields, the cache keys of each record, tombstones; composing records;
- `chunks`: one operation per chunk of a sync (records, journal and owed keys in one transaction);
- `journal`: cache work committed but not yet written, and keys regions are owed;
- `runs`: sync runs; `leases`: collection leases; `api_keys`: hashed API keys.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from sqlalchemy.engine import Connection, Engine

from orchestration.store.state import schema
from orchestration.store.state.api_keys import (
    KEY_PREFIX,
    ApiKeys,
    KeyInfo,
    UnknownApiKey,
    hash_secret,
    secret_matches,
    split_secret,
)
from orchestration.store.state.chunks import (
    CacheWork,
    Chunks,
    ChunkTarget,
    Fence,
    IndexKey,
    PreparedWrite,
    RecordWrite,
    prepare_write,
)
from orchestration.store.state.engine import (
    API_BOUNDS,
    SYNC_BOUNDS,
    EngineBounds,
    bounded_engine,
    make_engine,
)
from orchestration.store.state.journal import Journal, JournalEntry, OwedKeys
from orchestration.store.state.leases import Lease, Leases
from orchestration.store.state.records import (
    FieldsRow,
    RecordCounts,
    Records,
    StoredRecord,
    merge_fields,
)
from orchestration.store.state.runs import Runs, RunStatus, SyncRun

__all__ = [
    "API_BOUNDS",
    "KEY_PREFIX",
    "SYNC_BOUNDS",
    "CacheWork",
    "ChunkTarget",
    "EngineBounds",
    "Fence",
    "FieldsRow",
    "IndexKey",
    "JournalEntry",
    "KeyInfo",
    "Lease",
    "PreparedWrite",
    "RecordCounts",
    "RecordWrite",
    "RunStatus",
    "StateStore",
    "StoredRecord",
    "SyncRun",
    "UnknownApiKey",
    "hash_secret",
    "make_engine",
    "merge_fields",
    "prepare_write",
    "secret_matches",
    "split_secret",
]


class StateStore:
    """Everything Larder keeps durably, behind small named operations."""

    def __init__(self, url: str, *, engine: Engine | None = None, bounds: EngineBounds = SYNC_BOUNDS):
        self.url = url
        self.engine = engine or bounded_engine(url, bounds)
        self._records = Records(self.engine)
        self._runs = Runs(self.engine)
        self._journal = Journal(self.engine)
        self._owed = OwedKeys(self.engine)
        self._leases = Leases(self.engine)
        self._keys = ApiKeys(self.engine)
        self._chunks = Chunks(self.engine, self._records, self._journal, self._owed, self._runs)

    def create_all(self) -> None:
        """Create what is missing, and drop what earlier versions made and nothing reads any more."""
        schema.create_all(self.engine)

    def dispose(self) -> None:
        self.engine.dispose()

    def ping(self) -> None:
        """Raise unless the state store answers a trivial query."""
        with self.engine.connect() as conn:
            conn.exec_driver_sql("select 1")

    # --- API keys -----------------------------------------------------------------------------

    def create_key(self, name: str, *, collections: Sequence[str] | None = None,
                   regions: Sequence[str] | None = None, rate_limit: float | None = None) -> tuple[KeyInfo, str]:
        """Store a new key; returns it and its secret, which is never stored or shown again."""
        return self._keys.create(name, collections=collections, regions=regions, rate_limit=rate_limit)

    def list_keys(self, *, include_revoked: bool = True) -> list[KeyInfo]:
        return self._keys.list(include_revoked=include_revoked)

    def revoke_key(self, name: str) -> KeyInfo:
        return self._keys.revoke(name)

    # --- sync runs ----------------------------------------------------------------------------

    def start_run(self, sync_name: str, *, full_resync: bool, regions: Sequence[str], origin: str = "") -> int:
        return self._runs.start(sync_name, full_resync=full_resync, regions=regions, origin=origin)

    def heartbeat(self, run_id: int, counts: dict[str, int]) -> None:
        self._runs.heartbeat(run_id, counts)

    def finish_run(self, run_id: int, *, status: RunStatus, counts: dict[str, int],
                   rejection_samples: list[dict] | None = None, error: str | None = None) -> None:
        self._runs.finish(run_id, status=status, counts=counts, rejection_samples=rejection_samples, error=error)

    def recent_runs(self, sync_name: str, limit: int = 20) -> list[SyncRun]:
        return self._runs.recent(sync_name, limit)

    def last_run(self, sync_name: str) -> SyncRun | None:
        return self._runs.last(sync_name)

    def last_run_with_status(self, sync_name: str, status: RunStatus) -> SyncRun | None:
        """The newest run of a sync that ended with `status` (e.g. the last successful one)."""
        return self._runs.last_with_status(sync_name, status)

    def mark_abandoned_runs(self, sync_name: str, *, stale_after: float) -> int:
        """Runs still running with no heartbeat for `stale_after` seconds died: mark them failed."""
        return self._runs.mark_abandoned(sync_name, stale_after=stale_after)

    def fail_overtaken_run(self, run_id: int, error: str) -> bool:
        """Mark a run that is still running failed (another run took its lease); True if it was."""
        return self._runs.fail_overtaken(run_id, error)

    # --- a sync's snapshot ----------------------------------------------------------------------

    def snapshot(self, sync_name: str) -> dict[str, int]:
        """pk → row hash of everything the sync has written."""
        return self._records.snapshot(sync_name)

    def iter_snapshot(self, sync_name: str, batch: int = 100_000) -> Iterator[list[tuple[str, int]]]:
        """(pk, row hash) of everything the sync has written, streamed in batches."""
        return self._records.iter_snapshot(sync_name, batch)

    def sync_fields_of(self, sync_name: str, pks: Sequence[str]) -> dict[str, bytes]:
        """pk → the fields the sync last wrote, for the given records it has written."""
        return self._records.sync_fields_of(sync_name, pks)

    def has_tombstones(self, collection: str, sync_name: str) -> bool:
        return self._records.has_tombstones(collection, sync_name)

    # --- a sync's chunks: each one transaction, returning the cache work to do -------------------

    def commit_chunk(self, chunk: PreparedWrite, *, fence: Fence | None = None) -> CacheWork:
        """Write added and changed records of one chunk, prepared by `prepare_write` (which needs no
        database): see `chunks.Chunks.write`."""
        return self._chunks.write(chunk, fence=fence)

    def delete_chunk(self, target: ChunkTarget, pks: Sequence[str], *, fence: Fence | None = None) -> CacheWork:
        """Delete records of a collection the target's sync alone writes."""
        return self._chunks.delete(target, pks, fence=fence)

    def tombstone_chunk(self, target: ChunkTarget, pks: Sequence[str], *, fence: Fence | None = None) -> CacheWork:
        """Delete records of a merged collection: hidden until the sync's model has them again."""
        return self._chunks.tombstone(target, pks, fence=fence)

    def clear_chunk(self, target: ChunkTarget, pks: Sequence[str], *, fence: Fence | None = None) -> CacheWork:
        """Drop the target sync's fields of records; the records with other syncs' fields stay."""
        return self._chunks.clear(target, pks, fence=fence)

    def cache_written(self, work: CacheWork) -> None:
        """Every region was written the chunk's cache work: its journal entry is done."""
        if work.journal_id is not None:
            self._journal.clear([work.journal_id])

    # --- cache work owed ------------------------------------------------------------------------

    def replay_journal(self, collection: str) -> None:
        """Crashed runs' journal entries of the collection become keys owed to the regions they wrote."""
        self._chunks.replay_journal(collection)

    def pending_journal(self, sync_name: str | None = None, *, collection: str | None = None) -> list[JournalEntry]:
        return self._journal.pending(sync_name, collection=collection)

    def journal_collections(self) -> set[str]:
        """The collections with cache work pending in the journal."""
        return self._journal.collections()

    def iter_owed_keys(self, region: str, collection: str, batch: int = 2_000) -> Iterator[list[str]]:
        """The keys the region is owed in the collection, in batches (settle each before the next)."""
        return self._owed.iter_keys(region, collection, batch)

    def owed_work(self, collection: str, keys: Sequence[str], order: Sequence[str], *,
                  fence: Fence | None = None) -> CacheWork:
        """What writing owed keys means now, composed from state."""
        return self._chunks.owed_work(collection, keys, order, fence=fence)

    def owe(self, regions: Sequence[str], collection: str, cache_keys: Sequence[str]) -> None:
        """Record that `regions` must still be written these keys of the collection."""
        with self.engine.begin() as conn:
            self._owed.owe(conn, regions, collection, cache_keys)

    def settle(self, region: str, collection: str, cache_keys: Sequence[str]) -> None:
        """The region has been written these keys: it owes nothing more for them."""
        self._owed.settle(region, collection, cache_keys)

    def owed_collections(self, region: str) -> set[str]:
        """The collections with keys the region is owed."""
        return self._owed.collections(region)

    def forget_regions_except(self, regions: Sequence[str]) -> None:
        """Drop what regions no longer configured were owed: nobody will write them again."""
        self._owed.forget_regions_except(regions)

    # --- reading records (API fallback, rehydrate, the collection assets) -------------------------

    def resolve(self, cache_key: str) -> tuple[str, str] | None:
        """(collection, pk) of the record a cache key belongs to."""
        return self._records.resolve(cache_key)

    def records_by_keys(self, cache_keys: Sequence[str], order: Sequence[str]) -> dict[str, StoredRecord]:
        """cache key → the record it answers with (packed, and all its keys), for the given keys that exist."""
        return self._records.records_by_keys(cache_keys, order)

    def composed_records(self, collection: str, pks: Sequence[str], order: Sequence[str], *,
                         fence: Fence | None = None) -> CacheWork:
        """Every key of the given records with the record composed from state."""
        return self._chunks.composed_records(collection, pks, order, fence=fence)

    def iter_collection_pks(self, collection: str, batch: int = 5_000) -> Iterator[list[str]]:
        return self._records.iter_collection_pks(collection, batch)

    def collections_with_records(self) -> list[str]:
        return self._records.collections()

    def record_counts(self, collection: str) -> RecordCounts:
        """Records of the collection, and how many of them each sync wrote to."""
        return self._records.counts(collection)

    # --- tombstones -----------------------------------------------------------------------------

    def tombstoned(self, collection: str, pks: Sequence[str], *, by: Sequence[str]) -> set[str]:
        """The given records that the `delete` of one of the syncs `by` hides."""
        with self.engine.connect() as conn:
            return self._records.tombstoned(conn, collection, pks, by=by)

    def add_tombstones(self, collection: str, sync_name: str, pks: Sequence[str]) -> None:
        with self.engine.begin() as conn:
            self._records.add_tombstones(conn, collection, sync_name, pks)

    def lift_tombstones(self, collection: str, sync_name: str, pks: Sequence[str]) -> None:
        with self.engine.begin() as conn:
            self._records.lift_tombstones(conn, collection, sync_name, pks)

    # --- collection leases -------------------------------------------------------------------------

    def acquire_lease(self, lease: Lease) -> bool:
        """Take the collection's lease if it is free or expired, in one statement; True if taken."""
        return self._leases.acquire(lease)

    def take_over_lease(self, previous_token: str, lease: Lease) -> bool:
        """Replace the lease held under `previous_token` (its holder is known dead); False if it changed hands."""
        return self._leases.take_over(previous_token, lease)

    def renew_lease(self, collection: str, token: str, expires_at: float, conn: Connection | None = None) -> bool:
        """Extend a lease its holder still has; False if another run took it (inside `conn`'s transaction if given)."""
        return self._leases.renew(collection, token, expires_at, conn)

    def release_lease(self, collection: str, token: str) -> None:
        self._leases.release(collection, token)

    def lease_of(self, collection: str) -> Lease | None:
        return self._leases.of(collection)
