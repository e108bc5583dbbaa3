"""Records: each sync's fields (`record_fields`), every cache key a record answers to
(`record_indices`), and the records a `delete` sync hides (`record_tombstones`).

A record as a collection serves it is composed here: the union of its syncs' fields in merge
order, packed as a cache envelope, unless a `delete` sync of the collection tombstoned it.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from orchestration.store import envelope
from orchestration.store.state.engine import batches, insert_missing, upsert
from orchestration.store.state.schema import FIELDS, INDICES, TOMBSTONES


class StoredFields(NamedTuple):
    """One sync's fields of one record (in `record_fields`' column order: written as they are)."""

    sync_name: str
    pk: str
    collection: str
    fields: bytes
    row_hash: int
    updated_at: int


class IndexEntry(NamedTuple):
    """A cache key and the record it answers to (in `record_indices`' column order); `owner` is
    the sync whose index it is, or "" for the collection's primary index (shared by its syncs)."""

    cache_key: str
    collection: str
    pk: str
    owner: str


assert StoredFields._fields == tuple(FIELDS.columns.keys())
assert IndexEntry._fields[:3] == tuple(INDICES.columns.keys())[:3] and len(IndexEntry._fields) == len(INDICES.columns)


class StoredRecord(NamedTuple):
    """A record as the collection serves it (a packed cache envelope), and every cache key it answers to."""

    packed: bytes
    keys: list[str]


@dataclass(frozen=True)
class FieldsRow:
    """One sync's fields of a record, as composition reads them."""

    sync_name: str
    fields: bytes
    updated_at: int


@dataclass(frozen=True)
class RecordCounts:
    """How many records a collection holds, and how many of them each sync wrote to."""

    records: int
    by_sync: dict[str, int]


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


class Records:
    def __init__(self, engine: Engine):
        self.engine = engine

    # --- a sync's snapshot -----------------------------------------------------------------

    def snapshot(self, sync_name: str) -> dict[str, int]:
        """pk → row hash of everything the sync has written."""
        query = sa.select(FIELDS.c.pk, FIELDS.c.row_hash).where(FIELDS.c.sync_name == sync_name)
        with self.engine.connect() as conn:
            return dict(conn.execute(query).tuples().all())

    def iter_snapshot(self, sync_name: str, batch: int = 100_000) -> Iterator[list[tuple[str, int]]]:
        """(pk, row hash) of everything the sync has written, streamed in batches."""
        query = sa.select(FIELDS.c.pk, FIELDS.c.row_hash).where(FIELDS.c.sync_name == sync_name)
        with self.engine.connect() as conn:
            if conn.dialect.name == "sqlite":
                # Plain tuples from the driver (sqlite3 steps lazily): neither column needs
                # SQLAlchemy's result processing, which would cost more than reading.
                cursor = conn.connection.driver_connection.execute(  # type: ignore[union-attr]
                    "select pk, row_hash from record_fields where sync_name = ?", (sync_name,)
                )
                while rows := cursor.fetchmany(batch):
                    yield rows
                return
            result = conn.execution_options(stream_results=True, yield_per=batch).execute(query)
            for part in result.partitions(batch):
                yield [(row[0], row[1]) for row in part]

    def sync_fields_of(self, sync_name: str, pks: Sequence[str]) -> dict[str, bytes]:
        """pk → the fields the sync last wrote, for the given records it has written."""
        found: dict[str, bytes] = {}
        with self.engine.connect() as conn:
            if conn.dialect.name == "sqlite":
                # Plain tuples from the driver: SQLAlchemy's parameter and row processing cost as
                # much as SQLite's own lookups (a diff asks for every record whose inputs changed).
                driver: Any = conn.connection.driver_connection
                for batch in batches(pks):
                    marks = ",".join("?" * len(batch))
                    found.update(driver.execute(
                        f"select pk, fields from record_fields where sync_name = ? and pk in ({marks})",
                        (sync_name, *batch),
                    ).fetchall())
                return found
            for batch in batches(pks):
                query = sa.select(FIELDS.c.pk, FIELDS.c.fields).where(
                    FIELDS.c.sync_name == sync_name, FIELDS.c.pk.in_(batch)
                )
                found.update((row.pk, bytes(row.fields)) for row in conn.execute(query))
        return found

    # --- inside a transaction ----------------------------------------------------------------

    def fields_of(self, conn: Connection, collection: str, pks: Sequence[str]) -> dict[str, list[FieldsRow]]:
        """Every sync's fields of the given records."""
        found: dict[str, list[FieldsRow]] = defaultdict(list)
        for batch in batches(pks):
            query = sa.select(FIELDS.c.pk, FIELDS.c.sync_name, FIELDS.c.fields, FIELDS.c.updated_at).where(
                FIELDS.c.collection == collection, FIELDS.c.pk.in_(batch)
            )
            for row in conn.execute(query):
                found[row.pk].append(FieldsRow(row.sync_name, row.fields, row.updated_at))
        return found

    def index_keys_of(self, conn: Connection, collection: str, pks: Sequence[str]) -> dict[str, list[str]]:
        """Every cache key the given records answer to."""
        found: dict[str, list[str]] = defaultdict(list)
        for batch in batches(pks):
            query = sa.select(INDICES.c.pk, INDICES.c.cache_key).where(
                INDICES.c.collection == collection, INDICES.c.pk.in_(batch)
            )
            for row in conn.execute(query):
                found[row.pk].append(row.cache_key)
        return found

    def sync_index_keys_of(self, conn: Connection, sync_name: str, collection: str,
                           pks: Sequence[str]) -> dict[str, set[str]]:
        found: dict[str, set[str]] = defaultdict(set)
        for batch in batches(pks):
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
        for batch in batches(cache_keys):
            query = sa.select(INDICES.c.pk).where(INDICES.c.collection == collection, INDICES.c.cache_key.in_(batch))
            found.update(row.pk for row in conn.execute(query))
        return found

    def upsert_fields(self, conn: Connection, rows: Sequence[StoredFields] | Sequence[tuple]) -> None:
        upsert(conn, FIELDS, rows, ("sync_name", "pk"))

    def delete_fields(self, conn: Connection, sync_name: str, pks: Sequence[str]) -> None:
        for batch in batches(pks):
            conn.execute(FIELDS.delete().where(FIELDS.c.sync_name == sync_name, FIELDS.c.pk.in_(batch)))

    def delete_records(self, conn: Connection, collection: str, pks: Sequence[str]) -> None:
        """Remove every sync's fields and every index entry of the given records."""
        for batch in batches(pks):
            conn.execute(FIELDS.delete().where(FIELDS.c.collection == collection, FIELDS.c.pk.in_(batch)))
            conn.execute(INDICES.delete().where(INDICES.c.collection == collection, INDICES.c.pk.in_(batch)))

    def upsert_index_keys(self, conn: Connection, rows: Sequence[IndexEntry] | Sequence[tuple]) -> None:
        upsert(conn, INDICES, rows, ("cache_key",))

    def delete_index_keys(self, conn: Connection, keys: Sequence[str]) -> None:
        for batch in batches(keys):
            conn.execute(INDICES.delete().where(INDICES.c.cache_key.in_(batch)))

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

    def values_of(self, conn: Connection, collection: str, composed: Mapping[str, bytes]) -> dict[str, bytes]:
        """cache key → packed record, for every key of the composed records."""
        if not composed:
            return {}
        keys = self.index_keys_of(conn, collection, list(composed))
        return {key: composed[pk] for pk, pk_keys in keys.items() if pk in composed for key in pk_keys}

    def composed_values(self, conn: Connection, collection: str, pks: Sequence[str],
                        order: Sequence[str]) -> dict[str, bytes]:
        """cache key → packed record, for every key of the given records, composed from state."""
        if not pks:
            return {}
        return self.values_of(conn, collection, self.compose(conn, collection, pks, order))

    # --- tombstones ----------------------------------------------------------------------------

    def add_tombstones(self, conn: Connection, collection: str, sync_name: str, pks: Sequence[str]) -> None:
        now = time.time()
        insert_missing(conn, TOMBSTONES, [(collection, pk, sync_name, now) for pk in pks])

    def lift_tombstones(self, conn: Connection, collection: str, sync_name: str, pks: Sequence[str]) -> None:
        for batch in batches(pks):
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
        for batch in batches(pks):
            query = sa.select(TOMBSTONES.c.pk, TOMBSTONES.c.sync_name).where(
                TOMBSTONES.c.collection == collection, TOMBSTONES.c.pk.in_(batch)
            )
            found.update(row.pk for row in conn.execute(query) if row.sync_name in syncs)
        return found

    # --- reading records (API fallback, rehydrate, the collection assets) -------------------------

    def resolve(self, cache_key: str) -> tuple[str, str] | None:
        """(collection, pk) of the record a cache key belongs to."""
        query = sa.select(INDICES.c.collection, INDICES.c.pk).where(INDICES.c.cache_key == cache_key)
        with self.engine.connect() as conn:
            row = conn.execute(query).first()
        return (row.collection, row.pk) if row else None

    def records_by_keys(self, cache_keys: Sequence[str], order: Sequence[str]) -> dict[str, StoredRecord]:
        """cache key → the record it answers with, for the given keys that exist."""
        targets: dict[str, tuple[str, str]] = {}
        composed: dict[tuple[str, str], bytes] = {}
        all_keys: dict[tuple[str, str], list[str]] = {}
        with self.engine.connect() as conn:
            for batch in batches(cache_keys):
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
        return {key: StoredRecord(composed[t], all_keys.get(t, [])) for key, t in targets.items() if t in composed}

    def iter_collection_pks(self, collection: str, batch: int = 5_000) -> Iterator[list[str]]:
        query = (
            sa.select(FIELDS.c.pk).where(FIELDS.c.collection == collection).distinct().order_by(FIELDS.c.pk)
        )
        with self.engine.connect() as conn:
            result = conn.execution_options(stream_results=True, yield_per=batch).execute(query)
            for part in result.partitions(batch):
                yield [row.pk for row in part]

    def collections(self) -> list[str]:
        """The collections with records in state."""
        with self.engine.connect() as conn:
            return [row[0] for row in conn.execute(sa.select(FIELDS.c.collection).distinct())]

    def counts(self, collection: str) -> RecordCounts:
        where = FIELDS.c.collection == collection
        with self.engine.connect() as conn:
            records = conn.execute(sa.select(sa.func.count(sa.distinct(FIELDS.c.pk))).where(where)).scalar_one()
            by_sync = conn.execute(
                sa.select(FIELDS.c.sync_name, sa.func.count()).where(where).group_by(FIELDS.c.sync_name)
            ).all()
        return RecordCounts(int(records), dict(sorted(by_sync)))
