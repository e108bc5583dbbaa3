"""Cache work not yet done: the journal (`cache_journal`) and what regions are owed (`region_pending_keys`).

A chunk's journal entry commits with its state changes and is cleared once the caches were
written; an entry left behind (a crash) becomes keys owed to the regions its run wrote. A region a
run leaves out is owed the keys the run changed, until a run or rehydrate covering it writes them.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from orchestration.store.state.engine import batches, insert_missing
from orchestration.store.state.schema import JOURNAL, PENDING


@dataclass(frozen=True)
class JournalEntry:
    """Cache work a run committed to state: keys to delete, and records whose keys to rewrite."""

    id: int
    run_id: int
    sync_name: str
    collection: str
    stale_keys: list[str]
    pks: list[str]


class Journal:
    def __init__(self, engine: Engine):
        self.engine = engine

    def add(self, conn: Connection, run_id: int, sync_name: str, collection: str, stale_keys: Sequence[str],
            pks: Sequence[str]) -> int:
        result = conn.execute(JOURNAL.insert().values(
            run_id=run_id, sync_name=sync_name, collection=collection, stale_keys=list(stale_keys), pks=list(pks),
        ))
        return _inserted_id(result)

    def clear(self, entry_ids: Sequence[int]) -> None:
        with self.engine.begin() as conn:
            for batch in batches(entry_ids):
                conn.execute(JOURNAL.delete().where(JOURNAL.c.id.in_(batch)))

    def drop(self, conn: Connection, entry_id: int) -> None:
        conn.execute(JOURNAL.delete().where(JOURNAL.c.id == entry_id))

    def pending(self, sync_name: str | None = None, *, collection: str | None = None) -> list[JournalEntry]:
        query = sa.select(JOURNAL).order_by(JOURNAL.c.id)
        if sync_name is not None:
            query = query.where(JOURNAL.c.sync_name == sync_name)
        if collection is not None:
            query = query.where(JOURNAL.c.collection == collection)
        with self.engine.connect() as conn:
            return [
                JournalEntry(row.id, row.run_id, row.sync_name, row.collection, list(row.stale_keys), list(row.pks))
                for row in conn.execute(query)
            ]

    def collections(self) -> set[str]:
        """The collections with cache work pending in the journal."""
        with self.engine.connect() as conn:
            return {row[0] for row in conn.execute(sa.select(JOURNAL.c.collection).distinct())}


class OwedKeys:
    def __init__(self, engine: Engine):
        self.engine = engine

    def owe(self, conn: Connection, regions: Sequence[str], collection: str, cache_keys: Iterable[str]) -> None:
        """Record that `regions` must still be written these keys of the collection (from state)."""
        keys = list(cache_keys)
        if regions and keys:
            insert_missing(conn, PENDING, [(region, collection, key) for region in regions for key in keys])

    def iter_keys(self, region: str, collection: str, batch: int = 2_000) -> Iterator[list[str]]:
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
            for batch in batches(cache_keys):
                conn.execute(PENDING.delete().where(
                    PENDING.c.region == region, PENDING.c.collection == collection, PENDING.c.cache_key.in_(batch)
                ))

    def collections(self, region: str) -> set[str]:
        """The collections with keys the region is owed."""
        query = sa.select(PENDING.c.collection).where(PENDING.c.region == region).distinct()
        with self.engine.connect() as conn:
            return {row[0] for row in conn.execute(query)}

    def forget_regions_except(self, regions: Sequence[str]) -> None:
        """Drop what regions no longer configured were owed: nobody will write them again."""
        unknown = PENDING.c.region.not_in(list(regions))
        with self.engine.connect() as conn:  # read first: most runs have nothing to forget, and need no write
            if conn.execute(sa.select(PENDING.c.region).where(unknown).limit(1)).first() is None:
                return
        with self.engine.begin() as conn:
            conn.execute(PENDING.delete().where(unknown))


def _inserted_id(result: sa.CursorResult) -> int:
    key = result.inserted_primary_key
    assert key is not None, "an insert of one row has its primary key"
    return int(key[0])
