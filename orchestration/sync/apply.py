"""Apply a plan: durable state first, then every region's cache, journaled in between.

Each chunk commits its state changes together with a journal entry naming the cache keys to
delete and the records to rewrite, then writes the caches, then clears the entry. A run killed
anywhere leaves either nothing or a journal entry; `settle_collection` (run at the start of the
next run) finishes the cache work from state. A cached record is therefore always its old or its
new version, and the next run converges.

Regions a run does not write (left out by `--region`, disabled, or written only by another sync
of the collection) are owed the keys it changed: the same transaction records them in
`region_pending_keys`, and the next run or rehydrate that covers the region writes them from state.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

from orchestration.config.specs import DeleteBehaviour, SyncSpec
from orchestration.store import envelope
from orchestration.store.cache import RecordCache
from orchestration.store.keys import record_key
from orchestration.store.state import StateStore
from orchestration.sync.lease import CollectionLease
from orchestration.sync.mapping import MappedRecord

# Test-only hook: seconds to sleep after a chunk's state commit, before its cache writes, so the
# crash test can SIGKILL a real sync process where it matters (tests/sync/test_engine_crash.py).
PAUSE_AFTER_COMMIT = float(os.environ.get("LARDER_TEST_PAUSE_AFTER_COMMIT") or 0)

PRIMARY_OWNER = ""  # record_indices.sync_name of primary index keys: shared by every sync of the collection


@dataclass(frozen=True)
class CollectionLayout:
    """What apply needs to know about the collection a sync writes."""

    spec: SyncSpec
    sync_order: tuple[str, ...]  # syncs of the collection, in merge order
    owed_regions: tuple[str, ...] = ()  # regions of the collection this run does not write
    has_tombstones: bool = False  # the sync deleted records its model may bring back

    @property
    def merged(self) -> bool:
        return len(self.sync_order) > 1

    def keys_of(self, record: MappedRecord) -> list[tuple[str, str]]:
        """(cache key, owner) for each index value of the record."""
        collection, primary = self.spec.collection, self.spec.primary_index
        return [
            (record_key(collection, name, value), PRIMARY_OWNER if name == primary else self.spec.name)
            for name, value in record.index_values
        ]


@dataclass(frozen=True)
class CacheWork:
    """A chunk's cache writes, committed to state with their journal entry: `write_caches` does them."""

    stale: Sequence[str]  # cache keys to delete
    values: Mapping[str, bytes]  # cache key → packed record
    entry: int  # the journal entry, cleared once every region has them


def apply_changes(
    records: Sequence[MappedRecord],
    layout: CollectionLayout,
    state: StateStore,
    caches: Mapping[str, RecordCache],
    run_id: int,
    lease: CollectionLease,
) -> None:
    """Write added and changed records of one chunk to state, then to every region (holding `lease`)."""
    write_caches(commit_changes(records, layout, state, run_id, lease), state, caches)


def commit_changes(
    records: Sequence[MappedRecord],
    layout: CollectionLayout,
    state: StateStore,
    run_id: int,
    lease: CollectionLease,
) -> CacheWork:
    """The state half of `apply_changes`: commit the chunk with its journal entry. The caller then
    does the returned work with `write_caches`, chunks in commit order."""
    spec, collection = layout.spec, layout.spec.collection
    now = int(time.time())
    pks = [r.pk for r in records]
    keys_by_pk = {r.pk: layout.keys_of(r) for r in records}
    new_keys = {key for keys in keys_by_pk.values() for key, _ in keys}
    values: dict[str, bytes] = {}
    if not layout.merged:  # packed once per record (not per key), outside the write transaction
        for r in records:
            packed = envelope.pack(r.body, now)
            for key, _ in keys_by_pk[r.pk]:
                values[key] = packed
    with state.begin() as conn:
        lease.renew(conn)
        old_keys = state.sync_index_keys_of(conn, spec.name, collection, [r.pk for r in records if not r.is_new])
        stale = sorted({key for keys in old_keys.values() for key in keys} - new_keys)
        state.delete_index_keys(conn, stale)
        if layout.has_tombstones:  # a row back in the model brings back the record it deleted
            state.lift_tombstones(conn, collection, spec.name, [r.pk for r in records if r.is_new])
        state.upsert_fields(
            conn,
            [
                {"sync_name": spec.name, "pk": r.pk, "collection": collection, "fields": r.body,
                 "row_hash": r.row_hash, "updated_at": now}
                for r in records
            ],
        )
        state.upsert_index_keys(
            conn,
            [
                {"cache_key": key, "collection": collection, "pk": pk, "sync_name": owner}
                for pk, keys in keys_by_pk.items()
                for key, owner in keys
            ],
        )
        entry = state.journal(conn, run_id, spec.name, collection, stale, pks)
        if layout.merged:
            values = _composed_values(state, conn, collection, pks, layout.sync_order)
        if layout.owed_regions:
            state.owe(conn, layout.owed_regions, collection, new_keys.union(stale, values))
    if PAUSE_AFTER_COMMIT:
        time.sleep(PAUSE_AFTER_COMMIT)
    return CacheWork(stale, values, entry)


def write_caches(work: CacheWork, state: StateStore, caches: Mapping[str, RecordCache]) -> None:
    """The cache half of `apply_changes`: write a committed chunk to every region, then clear its
    journal entry."""
    _write_caches(caches, work.stale, work.values)
    state.clear_journal([work.entry])


@dataclass(frozen=True)
class Removal:
    """What applying the delete behaviour did: records whose rows left, and records rewritten
    (recomposed from the other syncs' fields)."""

    removed: int = 0
    written: int = 0


def apply_removals(
    pks: Sequence[str],
    layout: CollectionLayout,
    state: StateStore,
    caches: Mapping[str, RecordCache],
    run_id: int,
    lease: CollectionLease,
) -> Removal:
    """Apply the sync's delete behaviour to records whose rows left the model (holding `lease`)."""
    spec, collection = layout.spec, layout.spec.collection
    if not pks or spec.delete is DeleteBehaviour.keep:
        return Removal()
    composed: dict[str, bytes] = {}
    values: dict[str, bytes] = {}
    with state.begin() as conn:
        lease.renew(conn)
        if spec.delete is DeleteBehaviour.delete and not layout.merged:
            stale = sorted({k for keys in state.index_keys_of(conn, collection, pks).values() for k in keys})
            state.delete_record(conn, collection, pks)
        elif spec.delete is DeleteBehaviour.delete:
            stale = _tombstone(state, conn, spec, pks)
        else:
            stale, kept = _clear(state, conn, spec, pks)
            composed = state.compose(conn, collection, kept, layout.sync_order)
            values = _values_of(state, conn, collection, composed)
        entry = state.journal(conn, run_id, spec.name, collection, stale, sorted(composed))
        if layout.owed_regions:
            state.owe(conn, layout.owed_regions, collection, set(stale).union(values))
    _write_caches(caches, stale, values)
    state.clear_journal([entry])
    return Removal(removed=len(pks), written=len(composed))


def _tombstone(state: StateStore, conn, spec: SyncSpec, pks: Sequence[str]) -> list[str]:
    """`delete` in a merged collection: drop this sync's fields and hide the whole record (every
    key leaves the cache) until the sync's model has the row again. The other syncs' fields and
    index entries stay in state, so their snapshots still hold the record and it comes back
    composed from every sync. Returns the cache keys to delete."""
    collection = spec.collection
    every_key = state.index_keys_of(conn, collection, pks)
    own = state.sync_index_keys_of(conn, spec.name, collection, pks)
    state.delete_fields(conn, spec.name, pks)
    state.delete_index_keys(conn, sorted({k for keys in own.values() for k in keys}))
    remaining = state.fields_of(conn, collection, pks)
    state.delete_record(conn, collection, [pk for pk in pks if pk not in remaining])
    state.add_tombstones(conn, collection, spec.name, pks)
    return sorted({k for keys in every_key.values() for k in keys})


def _clear(state: StateStore, conn, spec: SyncSpec, pks: Sequence[str]) -> tuple[list[str], list[str]]:
    """`clear`: drop this sync's fields and its index entries; a record with no fields left goes.
    Returns the cache keys to delete and the records that remain (to recompose)."""
    collection = spec.collection
    own = state.sync_index_keys_of(conn, spec.name, collection, pks)
    state.delete_fields(conn, spec.name, pks)
    remaining = state.fields_of(conn, collection, pks)
    gone = [pk for pk in pks if pk not in remaining]
    stale = {k for keys in own.values() for k in keys}
    if gone:
        stale.update(k for keys in state.index_keys_of(conn, collection, gone).values() for k in keys)
        state.delete_record(conn, collection, gone)
    state.delete_index_keys(conn, sorted(stale))
    return sorted(stale), [pk for pk in pks if pk in remaining]


def settle_collection(
    state: StateStore,
    cache_of: Callable[[str], RecordCache],
    sync_order: Sequence[str],
    *,
    collection: str,
    regions: Sequence[str],
    lease: CollectionLease | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> int:
    """Bring `regions` up to date with the collection's state; returns how many keys were written or removed.

    First, cache work crashed runs committed to state but may not have written (their journal
    entries) becomes keys owed to every region those runs wrote. Then each of `regions` is written
    what it is owed, composed from the state as it is now (so replaying old work never undoes
    later work: a key a record owns again is rewritten, not deleted; a key of a deleted record is
    removed). Regions not named keep what they are owed: a region left out of a run is often down.
    The caller holds the collection's lease (`lease` is renewed with every batch); `on_batch` hears
    the running total after each batch.
    """
    _journal_to_owed(state, collection)
    settled = 0
    for region in regions:
        cache = cache_of(region)
        for keys in state.iter_owed_keys(region, collection):
            with state.begin() as conn:
                if lease is not None:
                    lease.renew(conn)
                pks = state.pks_of_keys(conn, collection, keys)
                values = _composed_values(state, conn, collection, sorted(pks), sync_order)
            _write_caches({region: cache}, [key for key in keys if key not in values], values)
            state.settle(region, collection, keys)
            settled += len(keys)
            if on_batch is not None:
                on_batch(settled)
    return settled


def _journal_to_owed(state: StateStore, collection: str) -> None:
    """Each journal entry of the collection becomes keys owed to the regions its run was writing."""
    for entry in state.pending_journal(collection=collection):
        regions = state.run_regions(entry["run_id"])
        with state.begin() as conn:
            keys = set(entry["stale_keys"])
            keys.update(k for pk_keys in state.index_keys_of(conn, collection, entry["pks"]).values() for k in pk_keys)
            state.owe(conn, regions, collection, keys)
            state.drop_journal_entry(conn, entry["id"])


def _composed_values(state: StateStore, conn, collection: str, pks: Sequence[str], order: Sequence[str]) -> dict[str, bytes]:
    """cache key → packed record, for every key of the given records, composed from state."""
    if not pks:
        return {}
    return _values_of(state, conn, collection, state.compose(conn, collection, pks, order))


def _values_of(state: StateStore, conn, collection: str, composed: Mapping[str, bytes]) -> dict[str, bytes]:
    """cache key → packed record, for every key of the composed records."""
    if not composed:
        return {}
    keys = state.index_keys_of(conn, collection, list(composed))
    return {key: composed[pk] for pk, pk_keys in keys.items() if pk in composed for key in pk_keys}


def _write_caches(caches: Mapping[str, RecordCache], stale: Sequence[str], values: Mapping[str, bytes]) -> None:
    for cache in caches.values():
        if stale:
            cache.delete_many(stale)
        if values:
            cache.set_many(values)
