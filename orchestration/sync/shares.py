"""A large first sync in shares: each worker process reads, maps, keeps and writes its own share.

A first sync maps every row of its model and writes every record. Moving records between processes
costs about as much as mapping them, so here none moves: a worker reads its part of the delta
(`SplittableDelta`), maps its rows and keeps the records in a spill of its own, and sends the sync
only what the scan must see one row after another (rows rejected or sharing an index value, with
their outcomes) and how many other records it kept. That is the scan: the sync counts, rejects
and samples as it always does (`diff.plan_scanned`), and decides whether the run writes at all
(too many rejections: it does not, and the workers are stopped with nothing written).

Then the verdict goes to every worker, with the pks the scan rejected, and each one writes the
records it kept but those, in chunks, as writers.py's processes write theirs: state first with a
journal entry, commits taking turns, then every region. Records of a first sync are all new to the
sync and share no index value once the rejected ones are out, so the shares commute.

A worker that fails or dies fails the run loudly: while scanning (MappingFailed) nothing was
written; while writing (WritingFailed) what it committed is journaled and settled by the next run.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from typing import Any

from orchestration.config.specs import SyncSpec
from orchestration.sync.diff import ScannedChunk, Spill, records_in_chunks
from orchestration.sync.mapping import MappedRecord, RecordMapper, RowRejected
from orchestration.sync.processes import (
    WAIT_SECONDS,
    collecting_rarely,
    died,
    failed,
    process_context,
    received,
    start_processes,
    stop_processes,
)
from orchestration.sync.warehouse import ModelDelta
from orchestration.sync.workers import MappingFailed, SplittableDelta, mapped_inline, present_rows
from orchestration.sync.writers import (
    PROGRESS_SECONDS,
    WHILE_WRITING,
    ChunkWriter,
    WriteJob,
    WritingFailed,
    report_between_commits,
)

PREVIEW_RECORDS = 20  # records each worker sends for the run's written preview
# What of its records a worker keeps in memory; the rest goes to its temporary file (read back once,
# in order: the OS's page cache serves it), so the processes together stay small.
KEPT_IN_MEMORY_BYTES = 4 * 1024 * 1024
_SCANNED = "scanned"  # a chunk of the scan: (records kept unseen, rows the scan sees, their outcomes)
_KEPT = "kept"  # the share is scanned: its first records, for the preview
_WRITE = "write"  # the verdict: write what you kept but records of these pks
_WROTE = "wrote"  # records written since the last message
_DONE = "done"


class ShareWorkers:
    """`workers` processes that scan a delta's parts (`scanned`), then write what they kept (`write`).
    `close` stops them, whatever phase they are in."""

    def __init__(self, delta: SplittableDelta, mapper: RecordMapper, job: WriteJob, *, workers: int,
                 on_wait: Callable[[], None] | None = None):
        self._delta, self._mapper, self._job, self._workers = delta, mapper, job, workers
        self._on_wait = on_wait  # called while the delta splits (a warehouse's keys pass may take long)
        self._exits = ExitStack()
        self._started: dict[Connection, BaseProcess] = {}  # in the parts' order
        self._previews: dict[Connection, list[MappedRecord]] = {}
        self._turn: Any = None

    def start(self) -> ShareWorkers:
        self._turn = process_context().Lock()
        try:
            parts = self._exits.enter_context(self._delta.split(self._workers, self._on_wait))
            spec, max_record_bytes = self._mapper.spec, self._mapper.max_record_bytes
            self._started = start_processes(
                _scan_then_write, [(part, spec, max_record_bytes, self._job, self._turn) for part in parts],
                "larder-share")
        except BaseException:
            self.close()
            raise
        return self

    def scanned(self) -> Iterator[ScannedChunk]:
        """The scan's chunks as workers send them, until each has scanned its share (an empty chunk
        when none came for a while: the sync reports progress and keeps its lease meanwhile)."""
        running = dict(self._started)
        while running:
            ready = wait(list(running), timeout=WAIT_SECONDS)
            if not ready:
                yield 0, [], []
            for conn in ready:
                kind, payload = received(conn, running[conn], MappingFailed, "worker process",
                                         "before it had scanned its share")
                if kind == _SCANNED:
                    yield payload
                else:  # _KEPT
                    self._previews[conn] = payload
                    del running[conn]
        # Every part is read: the split's files go, and a warehouse transaction whose view the parts
        # shared (Postgres) ends now, not once the records are written.
        self._exits.close()

    @property
    def preview(self) -> list[MappedRecord]:
        """The first records each worker kept (rejected ones included), in the workers' order."""
        return [record for conn in self._started if conn in self._previews for record in self._previews[conn]]

    def write(self, rejected: frozenset[str], on_progress: Callable[[int], None]) -> int:
        """Tell every worker to write what it kept but records of `rejected` pks; returns how many
        were written. `on_progress` hears the running total about once a second, between two
        commits, and at the end."""
        running = dict(self._started)
        for conn, process in running.items():
            try:
                conn.send((_WRITE, rejected))
            except (BrokenPipeError, ConnectionResetError):
                raise WritingFailed(died(process, "worker process", "before it wrote its share")) from None
        written, reported = 0, time.monotonic()
        while running:
            for conn in wait(list(running), timeout=WAIT_SECONDS):
                kind, payload = received(conn, running[conn], WritingFailed, "worker process", WHILE_WRITING)
                written += payload
                if kind == _DONE:
                    del running[conn]
            if time.monotonic() - reported >= PROGRESS_SECONDS and report_between_commits(self._turn, on_progress,
                                                                                          written):
                reported = time.monotonic()
        on_progress(written)
        return written

    def close(self) -> None:
        try:
            stop_processes(self._started)  # their spills go with them
        finally:
            self._started = {}
            self._exits.close()


@collecting_rarely
def _scan_then_write(part: ModelDelta, spec: SyncSpec, max_record_bytes: int, job: WriteJob, turn: Any,
                     conn: Connection) -> None:
    """A worker: scan its part (map, keep, tell the sync what it must see), wait for the verdict,
    write what it kept but the rejected records."""
    kept = Spill(KEPT_IN_MEMORY_BYTES)
    writer = None
    try:
        preview = _scan(part, RecordMapper(spec, max_record_bytes=max_record_bytes), kept, conn)
        conn.send((_KEPT, preview))
        kind, rejected = conn.recv()
        assert kind == _WRITE
        writer = ChunkWriter(job, turn)
        for chunk in records_in_chunks(kept.blocks(), rejected, job.chunk_size):
            conn.send((_WROTE, writer.write(chunk)))
        conn.send((_DONE, 0))
    except EOFError:  # the sync stopped listening (it failed, or decided not to write): nothing to say
        pass
    except BaseException as error:
        conn.send(failed(error, "worker process"))
    finally:
        kept.close()
        if writer is not None:
            writer.close()
        conn.close()


def _scan(part: ModelDelta, mapper: RecordMapper, kept: Spill, conn: Connection) -> list[MappedRecord]:
    """Map the part's rows, keep every record, send each chunk's rows the scan must see; returns
    the first records kept. A first sync: every record is new to the sync."""
    preview: list[MappedRecord] = []
    for chunk, outcomes in mapped_inline(part, present_rows, mapper, hashed=False):
        seen_rows, seen_outcomes, unseen = [], [], 0
        mapped = iter(outcomes)
        for delta_row in chunk:
            outcome = next(mapped) if delta_row.row is not None else None
            if outcome is None or isinstance(outcome, RowRejected) or delta_row.shared:
                seen_rows.append(delta_row)
                if outcome is not None:
                    seen_outcomes.append(outcome)
            else:
                unseen += 1
            if isinstance(outcome, MappedRecord):
                kept.keep(outcome, True, delta_row.fingerprint)
                if len(preview) < PREVIEW_RECORDS:
                    preview.append(outcome)
        conn.send((_SCANNED, (unseen, seen_rows, seen_outcomes)))
    return preview
