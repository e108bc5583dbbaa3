"""A first sync's writes on every core: writer processes commit and cache shares of its records.

A first sync writes every record of its model, and every one of them is new to the sync: no chunk
drops keys another chunk writes (the scan rejected rows sharing an index value), so chunks commute
and any process may write any of them, in any order. Preparing a chunk (keys, envelopes, rows),
committing it and writing it to the caches is most of a large first sync, and mostly Python: one
process keeps one core busy. So, for a first sync of at least `defaults.parallel_min_rows` records,
`defaults.write_workers` processes each ask the sync for a spilled block of records when they need
one, and write chunks of them as the sync's own process would: state first, with the chunk's
journal entry and the lease renewed in the transaction, then every region, then the entry cleared.

Commits take turns (a lock shared by the processes: SQLite has one writer at a time, and turns
handed over by the lock waste no time polling), so one process commits while the others prepare
and write caches. A process that fails or dies fails the run; what it committed but did not cache
is in the journal, settled by the next run, as after any crash.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from typing import Any

from orchestration.store.cache import RecordCache
from orchestration.store.state import StateStore
from orchestration.sync.apply import CollectionLayout, commit_prepared, do_cache_work, prepare_changes
from orchestration.sync.diff import records_in_chunks
from orchestration.sync.lease import CollectionLease
from orchestration.sync.mapping import MappedRecord
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

# How often the sync hears how many records the writers wrote (and records it in the run).
PROGRESS_SECONDS = 1.0
_WANT = "want"  # a writer asks for a block, and says how many records it wrote since it last asked
_DONE = "done"
# What a writing process that died was doing (a failure message ends with it).
WHILE_WRITING = "while writing its share of the sync; the next run settles what it committed"


class WritingFailed(RuntimeError):
    """A writer process failed or died while writing its share of a first sync."""


@dataclass(frozen=True)
class WriteJob:
    """What a writer process needs to write chunks as the sync would (it pickles: no connections)."""

    state_url: str
    servers: Mapping[str, tuple[str, ...]]  # region → its memcached servers: the regions the run writes
    layout: CollectionLayout
    run_id: int
    lease_holder: str
    lease_token: str
    lease_ttl: float
    chunk_size: int


class ChunkWriter:
    """A writer process's own connections (state, every region) and the run's lease: writes chunks
    of records as the sync's own process would, committing in turns with the other writers."""

    def __init__(self, job: WriteJob, turn: Any):
        self.job, self.turn = job, turn
        self.state = StateStore(job.state_url)
        self.caches = {region: RecordCache(servers) for region, servers in job.servers.items()}
        self.lease = CollectionLease.held(self.state, job.layout.spec.collection, job.lease_holder, job.lease_token,
                                          run_id=job.run_id, ttl=job.lease_ttl)

    def write(self, records: list[MappedRecord]) -> int:
        """State first (with the chunk's journal entry, the lease renewed), then every region, then
        the entry cleared; returns how many records."""
        chunk = prepare_changes(records, self.job.layout, self.job.run_id)
        with self.turn:
            work = commit_prepared(chunk, self.state, self.lease)
        do_cache_work(self.caches, work)
        with self.turn:
            self.state.cache_written(work)
        return len(records)

    def close(self) -> None:
        for cache in self.caches.values():
            cache.close()
        self.state.dispose()


def default_write_workers() -> int:
    """One writer per core: commits take turns, so each one's Python runs while another commits."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def write_in_processes(blocks: Iterator[bytes], job: WriteJob, rejected: frozenset[str], *, workers: int,
                       on_progress: Callable[[int], None]) -> int:
    """Write every record of `blocks` (a plan's spilled blocks) but those of `rejected` pks (rows the
    scan rejected after it had spilled their records) with `workers` processes; returns how many.
    `on_progress` hears the running total about once a second, between two commits (it may write
    to the state store: the run's heartbeat), and at the end."""
    turn = process_context().Lock()
    started = start_processes(_write_share, [(job, rejected, turn)] * workers, "larder-writer")
    try:
        return _serve(blocks, dict(started), turn, on_progress)
    finally:
        stop_processes(started)  # after a failure: a writer's committed chunks are journaled


def _serve(blocks: Iterator[bytes], running: dict[Connection, BaseProcess], turn: Any,
           on_progress: Callable[[int], None]) -> int:
    """Hand a block to each writer that asks for one, until every writer has written all it got."""
    written, reported = 0, time.monotonic()
    while running:
        for conn in wait(list(running), timeout=WAIT_SECONDS):
            kind, payload = received(conn, running[conn], WritingFailed, "writer process", WHILE_WRITING)
            written += payload
            if kind == _DONE:
                del running[conn]
            else:
                try:
                    conn.send_bytes(next(blocks, b""))  # an empty block: there is no more
                except (BrokenPipeError, ConnectionResetError):  # it asked, then died
                    raise WritingFailed(died(running[conn], "writer process", WHILE_WRITING)) from None
        if time.monotonic() - reported >= PROGRESS_SECONDS and report_between_commits(turn, on_progress, written):
            reported = time.monotonic()
    on_progress(written)
    return written


def report_between_commits(turn: Any, on_progress: Callable[[int], None], written: int) -> bool:
    """Call `on_progress` if no writer is committing now (it may write to the state store: the
    writers never wait for the sync's own writes); whether it was called."""
    if not turn.acquire(block=False):
        return False
    try:
        on_progress(written)
    finally:
        turn.release()
    return True


@collecting_rarely
def _write_share(job: WriteJob, rejected: frozenset[str], turn: Any, conn: Connection) -> None:
    """A writer: ask for blocks, write them in chunks, say how many records each request wrote."""
    written = 0  # records written since the writer last asked for a block

    def asked_blocks() -> Iterator[bytes]:
        nonlocal written
        while True:
            conn.send((_WANT, written))
            written = 0
            block = conn.recv_bytes()
            if not block:  # there is no more
                return
            yield block

    writer = None
    try:
        writer = ChunkWriter(job, turn)
        for chunk in records_in_chunks(asked_blocks(), rejected, job.chunk_size):
            written += writer.write(chunk)
        conn.send((_DONE, written))
    except BaseException as error:
        conn.send(failed(error, "writer process"))
    finally:
        if writer is not None:
            writer.close()
        conn.close()
