"""Apply a plan: durable state first, then every region's cache, journaled in between.

Each chunk commits its state changes together with a journal entry naming the cache keys to
delete and the records to rewrite, then writes the caches, then clears the entry. A run killed
anywhere leaves either nothing or a journal entry; `replay_journal` (run at the start of the next
run) finishes the cache work from state. A cached record is therefore always its old or its new
version, and the next run converges.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Callable, Collection, Mapping, Sequence

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


def apply_changes(
    records: Sequence[MappedRecord],
    layout: CollectionLayout,
    state: StateStore,
    caches: Mapping[str, RecordCache],
    run_id: int,
    lease: CollectionLease,
) -> None:
    """Write added and changed records of one chunk to state, then to every region (holding `lease`)."""
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
    if PAUSE_AFTER_COMMIT:
        time.sleep(PAUSE_AFTER_COMMIT)
    _write_caches(caches, stale, values)
    state.clear_journal([entry])


def apply_removals(
    pks: Sequence[str],
    layout: CollectionLayout,
    state: StateStore,
    caches: Mapping[str, RecordCache],
    run_id: int,
    lease: CollectionLease,
) -> int:
    """Apply the sync's delete behaviour to records whose rows left the model (holding `lease`); returns how many."""
    spec, collection = layout.spec, layout.spec.collection
    if not pks or spec.delete is DeleteBehaviour.keep:
        return 0
    with state.begin() as conn:
        lease.renew(conn)
        if spec.delete is DeleteBehaviour.delete:
            stale = sorted({k for keys in state.index_keys_of(conn, collection, pks).values() for k in keys})
            state.delete_record(conn, collection, pks)
            entry = state.journal(conn, run_id, spec.name, collection, stale, [])
            values: dict[str, bytes] = {}
        else:
            own = state.sync_index_keys_of(conn, spec.name, collection, pks)
            state.delete_fields(conn, spec.name, pks)
            remaining = state.fields_of(conn, collection, pks)
            gone = [pk for pk in pks if pk not in remaining]
            stale_set = {k for keys in own.values() for k in keys}
            if gone:
                stale_set.update(k for keys in state.index_keys_of(conn, collection, gone).values() for k in keys)
                state.delete_record(conn, collection, gone)
            stale = sorted(stale_set)
            state.delete_index_keys(conn, stale)
            kept = [pk for pk in pks if pk in remaining]
            entry = state.journal(conn, run_id, spec.name, collection, stale, kept)
            values = _composed_values(state, conn, collection, kept, layout.sync_order)
    _write_caches(caches, stale, values)
    state.clear_journal([entry])
    return len(pks)


def replay_journal(
    state: StateStore,
    cache_of: Callable[[str], RecordCache],
    sync_order_of: Callable[[str], Sequence[str]],
    *,
    enabled_regions: Collection[str],
    only_region: str | None = None,
    collection: str | None = None,
) -> int:
    """Finish cache work a crashed run committed to state but may not have written. Returns entries replayed.

    Each entry is written to every region its run wrote that is still enabled, then cleared.
    Every sync's entries are replayed: in a merged collection another sync's crash can leave
    stale cache entries for records this sync writes. The cache is rebuilt from the state as it
    is now, so replaying an old entry never undoes later work: a journaled stale key that a
    record owns again is rewritten instead of deleted. With `only_region`, only that region is
    written and entries stay pending for the others (rehydrating one region while another is down).
    The caller holds the lease of the collection replayed (`collection`; every one if None).
    """
    entries = state.pending_journal(collection=collection)
    for entry in entries:
        regions = [only_region] if only_region else [r for r in state.run_regions(entry["run_id"]) if r in enabled_regions]
        collection = entry["collection"]
        with state.begin() as conn:
            pks = set(entry["pks"]) | state.pks_of_keys(conn, collection, entry["stale_keys"])
            values = _composed_values(state, conn, collection, sorted(pks), sync_order_of(collection))
        stale = [key for key in entry["stale_keys"] if key not in values]
        _write_caches({region: cache_of(region) for region in regions}, stale, values)
        if only_region is None:
            state.clear_journal([entry["id"]])
    return len(entries)


def _composed_values(state: StateStore, conn, collection: str, pks: Sequence[str], order: Sequence[str]) -> dict[str, bytes]:
    """cache key → packed record, for every key of the given records, composed from state."""
    if not pks:
        return {}
    composed = state.compose(conn, collection, pks, order)
    keys = state.index_keys_of(conn, collection, pks)
    return {key: composed[pk] for pk, pk_keys in keys.items() if pk in composed for key in pk_keys}


def _write_caches(caches: Mapping[str, RecordCache], stale: Sequence[str], values: Mapping[str, bytes]) -> None:
    for cache in caches.values():
        if stale:
            cache.delete_many(stale)
        if values:
            cache.set_many(values)
