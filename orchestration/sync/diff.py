"""Plan a sync: map the rows, reject what cannot be served, compare with the snapshot.

Nothing is written here. Changed records are spilled to a temporary file so memory stays flat
however large the model is; the plan keeps only per-key bookkeeping.
"""

from __future__ import annotations

import marshal
import struct
import tempfile
from collections import Counter, defaultdict
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import orjson

from orchestration.config.specs import FieldType
from orchestration.store.keys import index_text
from orchestration.sync.mapping import MappedRecord, RecordMapper, RowRejected, json_default, record_of
from orchestration.sync.warehouse import DeltaRow, ModelDelta
from orchestration.sync.workers import Outcome, mapped_inline, present_rows

SPILL_IN_MEMORY_BYTES = 64 * 1024 * 1024
SPILL_BATCH = 2_000  # records per spilled block
SPILL_HEADER = struct.Struct("<Q")  # a block's byte length
# A chunk of a scan done by worker processes that keep the records (see shares.py): how many records
# they kept that the scan need not see, and the rows it must see (rejected, or sharing an index
# value) with the outcome of each one still in the model.
ScannedChunk = tuple[int, list[DeltaRow], list[Outcome]]


@dataclass
class Rejection:
    reason: str
    pk: str | None
    row: dict[str, Any]

    def sample(self) -> dict[str, Any]:
        return {"reason": self.reason, "pk": self.pk, "row": json_row(self.row)}


class Verdict(Enum):
    """How a scan counted a record it met."""

    ADDED = "added"
    CHANGED = "changed"  # the sync's fields of the record differ from what it last wrote
    REWRITTEN = "rewritten"  # written again with the same fields (a full resync, a changed mapping)
    UNCHANGED = "unchanged"
    REJECTED = "rejected"  # its rows are counted in SyncPlan.rejected


class Spill:
    """Records to write, in blocks of plain tuples in a temporary file (held in memory up to
    `in_memory_bytes`), so memory stays flat however many there are."""

    def __init__(self, in_memory_bytes: int = SPILL_IN_MEMORY_BYTES):
        self._in_memory_bytes = in_memory_bytes
        self._file: Any = None
        self._spilled = 0
        self._pending: list[tuple] = []

    def __len__(self) -> int:
        return self._spilled + len(self._pending)

    def keep(self, record: MappedRecord, is_new: bool, row_hash: int) -> None:
        if self._file is None:
            self._file = tempfile.SpooledTemporaryFile(max_size=self._in_memory_bytes, mode="w+b")
        self._pending.append((record.pk, record.body, row_hash, record.index_values, is_new))
        if len(self._pending) >= SPILL_BATCH:
            self._flush()

    def blocks(self) -> Iterator[bytes]:
        """The records kept, as blocks that `spilled_records` reads."""
        if self._file is None:
            return
        self._flush()
        self._file.seek(0)
        while header := self._file.read(SPILL_HEADER.size):
            yield self._file.read(SPILL_HEADER.unpack(header)[0])

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def _flush(self) -> None:
        # A batch of plain tuples per marshal call: C speed both ways, nothing re-encoded.
        if self._pending:
            blob = marshal.dumps(self._pending)
            self._file.write(SPILL_HEADER.pack(len(blob)))
            self._file.write(blob)
            self._spilled += len(self._pending)
            self._pending = []


@dataclass
class SyncPlan:
    """What a run will write: changed records (spilled), removed keys and the counts."""

    rows_read: int = 0
    records: Counter[Verdict] = field(default_factory=Counter)  # records by verdict (rejected rows apart)
    rejected: int = 0
    removed_pks: list[str] = field(default_factory=list)
    rejected_pks: set[str] = field(default_factory=set)
    rejection_samples: list[dict[str, Any]] = field(default_factory=list)
    rejection_reasons: Counter = field(default_factory=Counter)
    # pk → indexes of samples whose row was not kept (a duplicate's first row, rejected only when
    # the second one came): `fill_sample_rows` finds them after the scan.
    samples_missing_rows: dict[str, list[int]] = field(default_factory=dict)
    first_sync: bool = False  # the sync had no snapshot: every record it writes is new to it
    # The worker processes that hold the records to write, when they scanned (shares.ShareWorkers).
    shares: Any = None
    _spill: Spill = field(default_factory=Spill)

    @property
    def counts(self) -> dict[str, int]:
        return {
            "rows_read": self.rows_read,
            "added": self.records[Verdict.ADDED],
            "changed": self.records[Verdict.CHANGED],
            "rewritten": self.records[Verdict.REWRITTEN],
            "unchanged": self.records[Verdict.UNCHANGED],
            "rejected": self.rejected,
            "removed": len(self.removed_pks),
        }

    @property
    def rejected_share(self) -> float:
        return self.rejected / self.rows_read if self.rows_read else 0.0

    def changed_records(self, chunk_size: int) -> Iterator[list[MappedRecord]]:
        """The added and changed records, in chunks, minus rows rejected later in the scan."""
        return records_in_chunks(self.spilled_blocks(), self.rejected_pks, chunk_size)

    @property
    def records_to_write(self) -> int:
        """How many records `changed_records` gives, at most (rows rejected later are in the count)."""
        return len(self._spill)

    def spilled_blocks(self) -> Iterator[bytes]:
        """The records to write as the spill holds them: blocks that `spilled_records` reads."""
        return self._spill.blocks()

    def keep_to_write(self, record: MappedRecord, is_new: bool, row_hash: int) -> None:
        """Add a record to those `changed_records` gives."""
        self._spill.keep(record, is_new, row_hash)

    def close(self) -> None:
        if self.shares is not None:
            self.shares.close()
            self.shares = None
        self._spill.close()


def spilled_records(block: bytes, rejected: Collection[str]) -> list[MappedRecord]:
    """The records of one spilled block, minus rows rejected later in the scan."""
    return [record_of(fields) for fields in marshal.loads(block) if fields[0] not in rejected]


def records_in_chunks(blocks: Iterable[bytes], rejected: Collection[str], chunk_size: int) -> Iterator[list[MappedRecord]]:
    """The records of spilled blocks in chunks of `chunk_size` (the last one shorter)."""
    chunk: list[MappedRecord] = []
    for block in blocks:
        chunk += spilled_records(block, rejected)
        while len(chunk) >= chunk_size:
            yield chunk[:chunk_size]
            chunk = chunk[chunk_size:]
    if chunk:
        yield chunk


def plan_sync(
    chunks: Iterable[list[dict[str, Any]]],
    mapper: RecordMapper,
    snapshot: dict[str, Any],
    *,
    full_resync: bool = False,
    max_samples: int = 20,
    progress: Callable[[dict[str, int]], None] | None = None,
) -> SyncPlan:
    """Scan the model once, mapping every row. `snapshot` (pk → hash) is consumed: what is left
    of it was removed.

    Rows with a null primary index, a duplicate primary or extra index value, an oversized
    record or a failing template are rejected with their reason; for a duplicate, every row
    sharing the value is rejected, and the record keeps what it had before.
    """
    scan = _Scan(mapper, snapshot, full_resync=full_resync, max_samples=max_samples)
    for chunk, outcomes in mapped_inline(chunks, _whole, mapper, hashed=True):
        for row, outcome in zip(chunk, outcomes):
            record = scan.count(row, outcome)
            if record is not None:
                previous = snapshot.get(record.pk)
                scan.admit(record, row, previous, record.row_hash, tracked=True, same_body=previous == record.row_hash)
        if progress is not None:
            progress(scan.plan.counts)
    scan.plan.removed_pks = [pk for pk, value in snapshot.items() if not isinstance(value, Verdict)]
    return scan.plan


def plan_delta(
    delta: ModelDelta,
    mapper: RecordMapper,
    *,
    full_resync: bool = False,
    max_samples: int = 20,
    progress: Callable[[dict[str, int]], None] | None = None,
    previous_bodies: Callable[[list[str]], dict[str, bytes]] | None = None,
    mapped: Iterable[tuple[list[DeltaRow], list[Outcome]]] | None = None,
) -> SyncPlan:
    """The plan `plan_sync` would make, from the rows the warehouse found different (ModelDelta).

    Rows not in the delta are unchanged and share no index value with any other row: they are
    counted, not mapped. Rows that share a value are tracked exactly as `plan_sync` tracks every
    row, so duplicates are rejected the same way; the snapshot stores fingerprints, not body hashes.
    A fingerprint that differs says the inputs or the mapping changed, not that the record did:
    `previous_bodies` (pk → the fields last written) tells a changed record from a rewritten one.
    `mapped`: the delta's chunks already mapped (by worker processes), in any order; else the
    rows are mapped here.
    """
    scan = _Scan(mapper, {}, full_resync=full_resync, max_samples=max_samples)
    matched = 0  # snapshot pks met in the delta (removed included)
    shared_matched: set[str] = set()
    if mapped is None:  # the snapshot holds the warehouse's fingerprints: bodies need no hash of their own
        mapped = mapped_inline(delta, present_rows, mapper, hashed=False)
    for chunk, outcomes in mapped:
        row_outcomes = iter(outcomes)
        before: dict[str, bytes] = {}
        if delta.snapshot_size and previous_bodies is not None:  # (a first sync has nothing to compare)
            differing = [pk for row, pk, fingerprint, previous, _ in chunk
                         if row is not None and previous is not None and previous != fingerprint]
            before = previous_bodies(differing) if differing else {}
        for row, pk, fingerprint, previous, shared in chunk:
            if row is None:
                scan.plan.removed_pks.append(pk)
                matched += 1
                continue
            if previous is not None:
                if shared:
                    shared_matched.add(pk)
                else:
                    matched += 1
            record = scan.count(row, next(row_outcomes))
            if record is not None:
                same_body = previous == fingerprint or before.get(record.pk) == record.body
                scan.admit(record, row, previous, fingerprint, tracked=shared, same_body=same_body)
        if progress is not None:
            progress(scan.plan.counts)
    unseen = delta.snapshot_size - matched - len(shared_matched)
    if unseen:
        scan.plan.rows_read += unseen
        scan.plan.records[Verdict.UNCHANGED] += unseen
        if progress is not None:
            progress(scan.plan.counts)
    return scan.plan


def plan_scanned(
    scanned: Iterable[ScannedChunk],
    mapper: RecordMapper,
    *,
    max_samples: int = 20,
    progress: Callable[[dict[str, int]], None] | None = None,
) -> SyncPlan:
    """The plan of a first sync whose rows worker processes mapped and kept (see shares.py): the
    plan `plan_delta` would make, from the rows it must see; the others are counted as added. It
    spills nothing: the workers write what they kept, but the pks it rejects."""
    scan = _Scan(mapper, {}, full_resync=False, max_samples=max_samples, keeps=False)
    for unseen, rows, outcomes in scanned:
        scan.plan.rows_read += unseen
        scan.plan.records[Verdict.ADDED] += unseen
        row_outcomes = iter(outcomes)
        for row, pk, fingerprint, _previous, shared in rows:
            if row is None:
                scan.plan.removed_pks.append(pk)
                continue
            record = scan.count(row, next(row_outcomes))
            if record is not None:
                scan.admit(record, row, None, fingerprint, tracked=shared, same_body=False)
        if progress is not None:
            progress(scan.plan.counts)
    return scan.plan


def _whole(chunk: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return chunk


class _Scan:
    """One scan's bookkeeping. `seen` maps tracked pks to how they were counted (Verdict); in
    plan_sync it is the snapshot itself, so its other values are the previous hashes."""

    def __init__(self, mapper: RecordMapper, seen: dict[str, Any], *, full_resync: bool, max_samples: int,
                 keeps: bool = True):
        self.plan = SyncPlan()
        self.keeps = keeps  # False: the records to write are kept elsewhere (by the workers that mapped them)
        self.mapper = mapper
        self.seen = seen
        self.full_resync = full_resync
        self.max_samples = max_samples
        self.index_owner: dict[str, dict[str, str]] = {name: {} for name in mapper.spec.indices}

    def count(self, row: dict[str, Any], outcome: Outcome) -> MappedRecord | None:
        """Count a row read; its record, or None when it was rejected (counted and sampled here)."""
        self.plan.rows_read += 1
        if not isinstance(outcome, RowRejected):
            return outcome
        self.reject(str(outcome), outcome.pk, row)
        if outcome.pk is not None and not isinstance(self.seen.get(outcome.pk), Verdict):
            # The record keeps what it had: it is neither rewritten nor removed.
            self.seen[outcome.pk] = Verdict.REJECTED
            self.plan.rejected_pks.add(outcome.pk)
        return None

    def admit(self, record: MappedRecord, row: dict[str, Any], previous: Any, row_hash: int, *, tracked: bool,
              same_body: bool) -> None:
        """Count a mapped record and keep it if it must be written. An untracked record is known
        to share no index value with any other row of the model; `same_body` says its fields are
        those last written (a full resync or a changed mapping rewrites it, it did not change)."""
        plan, pk = self.plan, record.pk
        if tracked and isinstance(self.seen.get(pk), Verdict):
            self.reject(f"duplicate primary index value {pk!r}", pk, row)
            self.reject_first_sighting(pk, f"duplicate primary index value {pk!r}")
            return
        conflict = _claim_indices(self.index_owner, record) if tracked else None
        if previous is None:
            seen = Verdict.ADDED
        elif previous == row_hash and not self.full_resync:
            seen = Verdict.UNCHANGED
        elif same_body:
            seen = Verdict.REWRITTEN
        else:
            seen = Verdict.CHANGED
        if tracked:
            self.seen[pk] = seen
        if conflict is not None:
            name, value, other = conflict
            plan.rejected_pks.add(pk)
            self.reject(f"duplicate {name} value {value!r} (also on {other!r})", pk, row)
            self.reject_first_sighting(other, f"duplicate {name} value {value!r} (also on {pk!r})")
            return
        plan.records[seen] += 1
        if seen is not Verdict.UNCHANGED and self.keeps:
            plan.keep_to_write(record, seen is Verdict.ADDED, row_hash)

    def reject(self, reason: str, pk: str | None, row: dict[str, Any] | None) -> None:
        """Count a rejection and sample it; `row` None: the row is no longer at hand (found later)."""
        plan = self.plan
        plan.rejected += 1
        plan.rejection_reasons[reason.split(" ")[0]] += 1
        if len(plan.rejection_samples) < self.max_samples:
            if row is None and pk is not None:
                plan.samples_missing_rows.setdefault(pk, []).append(len(plan.rejection_samples))
            plan.rejection_samples.append(Rejection(reason, pk, row or {}).sample())

    def reject_first_sighting(self, pk: str, reason: str) -> None:
        plan = self.plan
        if pk in plan.rejected_pks:
            return
        plan.rejected_pks.add(pk)
        seen = self.seen[pk]
        if seen is Verdict.REJECTED:
            return
        plan.records[seen] -= 1
        self.reject(reason, pk, None)


def _claim_indices(owner: dict[str, dict[str, str]], record: MappedRecord) -> tuple[str, str, str] | None:
    for name, value in record.index_values[1:]:
        other = owner[name].get(value)
        if other is not None and other != record.pk:
            return name, value, other
    for name, value in record.index_values[1:]:
        owner[name][value] = record.pk
    return None


def fill_sample_rows(plan: SyncPlan, chunks: Iterable[Sequence[dict[str, Any]]], mapper: RecordMapper) -> None:
    """Put the model's rows into the samples that lack theirs (`plan.samples_missing_rows`): `chunks`
    holds at least those rows. A pk sampled twice (a duplicate pair) gets a row not sampled yet."""
    wanted = plan.samples_missing_rows
    primary_text = _primary_text(mapper)
    found: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for chunk in chunks:
        for row in chunk:
            pk = primary_text(row)
            if pk in wanted:
                found[pk].append(json_row(row))
    for pk, indexes in wanted.items():
        taken = [s["row"] for s in plan.rejection_samples if s["pk"] == pk and s["row"]]
        for index in indexes:
            rows = found.get(pk, [])
            choice = next((r for r in rows if r not in taken), rows[0] if rows else None)
            if choice is not None:
                plan.rejection_samples[index]["row"] = choice
                taken.append(choice)
    plan.samples_missing_rows = {}


def _primary_text(mapper: RecordMapper) -> Callable[[dict[str, Any]], str | None]:
    """row → its primary index value: read straight from the column when it is mapped as it is,
    else by mapping the row."""
    spec = mapper.spec
    primary = next(f for f in spec.fields if f.target == spec.primary_index)
    if primary.column is not None and primary.type is FieldType.auto:
        column = primary.column
        return lambda row: index_text(row.get(column))

    def mapped(row: dict[str, Any]) -> str | None:
        try:
            return mapper.map_row(row, hashed=False).pk
        except RowRejected as error:
            return error.pk

    return mapped


def json_row(row: dict[str, Any]) -> dict[str, Any]:
    """A model row as JSON values: lists and structs stay arrays and objects, dates ISO text,
    decimals numbers (as records serve them); anything else becomes its text."""
    return {str(name): _json_value(value) for name, value in row.items()}


def _json_value(value: Any) -> Any:
    if value is None or isinstance(value, (str, int, bool)):
        return value
    try:
        return orjson.loads(orjson.dumps(value, default=json_default, option=orjson.OPT_NON_STR_KEYS))
    except (TypeError, orjson.JSONEncodeError):
        return str(value)
