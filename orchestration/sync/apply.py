"""Apply a plan: durable state first, then every region's cache, journaled in between.

Each chunk commits its state changes together with a journal entry naming the cache keys to
delete and the records to rewrite, then writes the caches, then clears the entry. A run killed
anywhere leaves either nothing or a journal entry; `settle_collection` (run at the start of the
next run) finishes the cache work from state. A cached record is therefore always its old or its
new version, and the next run converges.

Regions a run does not write (left out by `--region`, disabled, or written only by another sync
of the collection) are owed the keys it changed: the same transaction records them as owed, and
the next run or rehydrate that covers the region writes them from state.

Each chunk is one operation of the state store (`StateStore.commit_chunk` and the like); what it
returns (`CacheWork`) is what every region's cache must then do.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from orchestration.config.specs import DeleteBehaviour, SyncSpec
from orchestration.store.cache import RecordCache
from orchestration.store.keys import record_key
from orchestration.store.state import (
    CacheWork,
    ChunkTarget,
    PreparedWrite,
    RecordWrite,
    StateStore,
    prepare_write,
)
from orchestration.sync.lease import CollectionLease
from orchestration.sync.mapping import MappedRecord

PRIMARY_OWNER = ""  # the owner of primary index keys: shared by every sync of the collection


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
        """The cache key and its owner (an IndexKey, as a plain pair) for each index value of the record."""
        collection, primary = self.spec.collection, self.spec.primary_index
        return [
            (record_key(collection, name, value), PRIMARY_OWNER if name == primary else self.spec.name)
            for name, value in record.index_values
        ]

    def target(self, run_id: int) -> ChunkTarget:
        return ChunkTarget(run_id, self.spec.name, self.spec.collection, self.sync_order,
                           owed_regions=self.owed_regions, has_tombstones=self.has_tombstones)


def prepare_changes(records: Sequence[MappedRecord], layout: CollectionLayout, run_id: int) -> PreparedWrite:
    """A chunk's writes made ready to commit, without the database (in a sync, while the previous
    chunk commits: see pipeline.py)."""
    writes = [RecordWrite(r.pk, r.body, r.row_hash, layout.keys_of(r), r.is_new) for r in records]
    return prepare_write(layout.target(run_id), writes)


def commit_prepared(chunk: PreparedWrite, state: StateStore, lease: CollectionLease) -> CacheWork:
    """Commit a prepared chunk with its journal entry, holding `lease`. The caller then does the
    returned work with `write_caches`, chunks in commit order."""
    return state.commit_chunk(chunk, fence=lease.renew)


def write_caches(work: CacheWork, state: StateStore, caches: Mapping[str, RecordCache]) -> None:
    """Write a committed chunk to every region, then clear its journal entry."""
    do_cache_work(caches, work)
    state.cache_written(work)


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
    spec = layout.spec
    if not pks or spec.delete is DeleteBehaviour.keep:
        return Removal()
    target = layout.target(run_id)
    if spec.delete is DeleteBehaviour.delete and not layout.merged:
        work = state.delete_chunk(target, pks, fence=lease.renew)
    elif spec.delete is DeleteBehaviour.delete:
        work = state.tombstone_chunk(target, pks, fence=lease.renew)
    else:
        work = state.clear_chunk(target, pks, fence=lease.renew)
    do_cache_work(caches, work)
    state.cache_written(work)
    return Removal(removed=len(pks), written=len(work.pks))


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
    state.replay_journal(collection)
    settled = 0
    fence = lease.renew if lease is not None else None
    for region in regions:
        cache = cache_of(region)
        for keys in state.iter_owed_keys(region, collection):
            do_cache_work({region: cache}, state.owed_work(collection, keys, sync_order, fence=fence))
            state.settle(region, collection, keys)
            settled += len(keys)
            if on_batch is not None:
                on_batch(settled)
    return settled


def do_cache_work(caches: Mapping[str, RecordCache], work: CacheWork) -> None:
    """The cache work of a chunk, in every region written."""
    for cache in caches.values():
        if work.stale_keys:
            cache.delete_many(work.stale_keys)
        if work.values:
            cache.set_many(work.values)
