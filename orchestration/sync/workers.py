"""Mapping a model's rows on every core: worker processes read and map their own part of a delta.

A scan reads every row that needs mapping, maps it (select, rename, Liquid, encode) and then
does bookkeeping that must see the rows one after the other (duplicates, counts, samples).
Reading (rows become Python objects) and mapping are most of the work and need nothing from
other rows, so a delta that can split itself (`SplittableDelta`: the DuckDB backend) is read by
worker processes, one part each, which map their rows and send back only what the bookkeeping
needs: the records, and the rows it may have to show (rejected or sharing an index value).
Shipping rows to workers instead would cost more than mapping them.

A worker waits while the scan has not taken its last chunk, so memory stays flat whatever the
model's size. A worker that raises fails the scan with its error (`MappingFailed`); a worker that
dies (killed, out of memory) fails it too, never a hang.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from typing import Any, Protocol, TypeVar, runtime_checkable

from orchestration.config.specs import SyncSpec
from orchestration.sync.mapping import MappedRecord, RecordMapper, RowRejected
from orchestration.sync.processes import (
    WAIT_SECONDS,
    collecting_rarely,
    failed,
    received,
    start_processes,
    stop_processes,
)
from orchestration.sync.warehouse import DeltaRow, ModelDelta

Outcome = MappedRecord | RowRejected  # a row's record, or why it has none
Chunk = TypeVar("Chunk")
MappedChunk = tuple[list[DeltaRow], list[Outcome]]  # a delta's chunk, and the outcome of each row it has

_DONE = "done"


class MappingFailed(RuntimeError):
    """A worker process failed or died while reading and mapping its part of the model."""


@runtime_checkable
class SplittableDelta(Protocol):
    """A ModelDelta that can be read in parts, each from its own process."""

    snapshot_size: int

    def split(self, parts: int, on_wait: Callable[[], None] | None = None) -> AbstractContextManager[Sequence[ModelDelta]]:
        """`parts` deltas whose chunks, together, are this delta's; `snapshot_size` is set on entry.
        `on_wait` is called every few seconds while entering takes long (the run keeps its lease)."""


def default_workers() -> int:
    """One worker per core the process may run on but one, which the scan's own process keeps
    busy (bookkeeping, then the state writes) with memcached. On 2 cores that is no worker: there,
    two workers made a 1M-row full sync about 5 % faster for twice the memory of the process tree."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, cores - 1)


def map_rows(mapper: RecordMapper, rows: Sequence[dict[str, Any]], hashed: bool) -> list[Outcome]:
    """Each row's record, or the RowRejected that says why it has none."""
    outcomes: list[Outcome] = []
    append, map_row = outcomes.append, mapper.map_row
    for row in rows:
        try:
            append(map_row(row, hashed=hashed))
        except RowRejected as rejected:
            append(rejected)
    return outcomes


def mapped_inline(chunks: Iterable[Chunk], rows_of: Callable[[Chunk], Sequence[dict[str, Any]]],
                  mapper: RecordMapper, *, hashed: bool) -> Iterator[tuple[Chunk, list[Outcome]]]:
    """(chunk, the outcome of each of its rows `rows_of` gives), mapped in this process."""
    for chunk in chunks:
        yield chunk, map_rows(mapper, rows_of(chunk), hashed)


def present_rows(chunk: Sequence[DeltaRow]) -> list[dict[str, Any]]:
    """The rows of a delta chunk to map: all but records whose row left the model."""
    return [delta_row.row for delta_row in chunk if delta_row.row is not None]


@contextmanager
def mapped_in_workers(delta: SplittableDelta, mapper: RecordMapper, *, workers: int, hashed: bool,
                      on_wait: Callable[[], None] | None = None) -> Iterator[Iterator[MappedChunk]]:
    """The delta's chunks with their outcomes (as `mapped_inline` gives them, in another order),
    read and mapped by `workers` processes; leaving the block stops them."""
    with delta.split(workers, on_wait) as parts:
        started = start_processes(_work, [(part, mapper.spec, mapper.max_record_bytes, hashed) for part in parts],
                                  "larder-mapping", duplex=False)
        try:
            yield _collect(dict(started))
        finally:
            stop_processes(started)


def _collect(running: dict[Connection, BaseProcess]) -> Iterator[MappedChunk]:
    """Chunks as workers send them, until every worker said it is done. Each worker has its own
    pipe, so one that dies mid-message spoils only its own, and the end of it tells the scan."""
    while running:
        ready = wait(list(running), timeout=WAIT_SECONDS)
        if not ready:
            yield [], []  # nothing yet: the scan reports progress (and keeps its lease) meanwhile
        for receiver in ready:
            kind, payload = received(receiver, running[receiver], MappingFailed, "mapping worker",
                                     "before it had read its part of the model")
            if kind == _DONE:
                del running[receiver]
            else:
                yield payload


@collecting_rarely
def _work(part: ModelDelta, spec: SyncSpec, max_record_bytes: int, hashed: bool, sender: Connection) -> None:
    """A worker: read the part, map its rows, send each chunk's outcomes and the rows the scan may
    show. Sending blocks while the scan is behind, so a worker holds a chunk or two at most."""
    try:
        mapper = RecordMapper(spec, max_record_bytes=max_record_bytes)
        for chunk, outcomes in mapped_inline(part, present_rows, mapper, hashed=hashed):
            sender.send(("chunk", (_keep_needed_rows(chunk, outcomes), outcomes)))
        sender.send((_DONE, None))
    except BaseException as error:
        sender.send(failed(error, "mapping worker"))
    finally:
        sender.close()


_NOT_SENT: dict[str, Any] = {}  # stands for a row the scan will not show (None would mean the row left)


def _keep_needed_rows(chunk: Sequence[DeltaRow], outcomes: Sequence[Outcome]) -> list[DeltaRow]:
    """The chunk without the rows the scan never shows: only a rejected row, or one that shares
    an index value (it may be rejected as a duplicate), can become a rejection sample."""
    mapped = iter(outcomes)
    kept = []
    for delta_row in chunk:
        if delta_row.row is not None and not isinstance(next(mapped), RowRejected) and not delta_row.shared:
            delta_row = delta_row._replace(row=_NOT_SENT)
        kept.append(delta_row)
    return kept
