"""The write phase as a pipeline: three chunks in flight, each stage on its own thread.

A chunk is prepared on the sync's thread (its rows, keys and envelopes: apply.prepare_changes),
committed to state with its journal entry on the state thread (apply.commit_prepared), then
written to every region with its entry cleared on the cache thread (apply.write_caches). While one
chunk commits, the next is prepared and the previous one written: SQLite's work, memcached's
round trips and the sync's Python run at once (the first two release the GIL while they wait or
work), and the slowest stage sets the pace.

Crash safety is apply's: an entry is cleared only after its chunk reached every region, so a run
killed anywhere leaves journal entries that the next run settles. Commits and cache writes keep
the chunks' order (a key a chunk deletes may be one a later chunk sets). After a stage fails,
nothing more is committed, and the error is raised by the next `submit` or by `drain`. At most
`behind` chunks wait for the threads, so memory stays flat.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor

from orchestration.store.cache import RecordCache
from orchestration.store.state import CacheWork, PreparedWrite, StateStore
from orchestration.sync.apply import commit_prepared, write_caches
from orchestration.sync.lease import CollectionLease

# Chunks prepared whose cache writes have not finished: one committing, one being written.
CHUNKS_BEHIND = 2


class PipelineStopped(RuntimeError):
    """A chunk was not committed because an earlier one failed (that error is the one raised)."""


class WritePipeline:
    """Commits prepared chunks on one thread and writes them to the caches on another, in order;
    `drain` waits until every chunk submitted is in every region."""

    def __init__(self, state: StateStore, caches: Mapping[str, RecordCache], lease: CollectionLease, *,
                 behind: int = CHUNKS_BEHIND):
        self._state, self._caches, self._lease, self._behind = state, caches, lease, behind
        self._pending: deque[Future] = deque()
        self._stopped = threading.Event()  # a stage failed, or the pipeline was closed
        self._committer = ThreadPoolExecutor(1, thread_name_prefix="larder-state-writer")
        self._cache_writer = ThreadPoolExecutor(1, thread_name_prefix="larder-cache-writer")

    def submit(self, chunk: PreparedWrite) -> None:
        committed = self._committer.submit(self._commit, chunk)
        self._pending.append(self._cache_writer.submit(self._write, committed))
        if len(self._pending) > self._behind:
            self._pending.popleft().result()

    def heartbeat(self, run_id: int, counts: dict[str, int]) -> None:
        """Record the run's progress, on the state thread: between two commits, never waiting for one."""
        self._committer.submit(self._state.heartbeat, run_id, dict(counts))

    def drain(self) -> None:
        """Wait until every chunk submitted is in every region and its journal entry cleared."""
        while self._pending:
            self._pending.popleft().result()

    def close(self) -> None:
        """Stop (after a failure: chunks not written yet keep their journal entries, for the next run)."""
        self._stopped.set()
        self._committer.shutdown(wait=True, cancel_futures=True)
        self._cache_writer.shutdown(wait=True, cancel_futures=True)
        self._pending.clear()

    def _commit(self, chunk: PreparedWrite) -> CacheWork:
        if self._stopped.is_set():
            raise PipelineStopped("not committed: an earlier chunk failed")
        try:
            return commit_prepared(chunk, self._state, self._lease)
        except BaseException:
            self._stopped.set()
            raise

    def _write(self, committed: Future) -> None:
        work = committed.result()  # the commit's error, if it failed, is this chunk's
        try:
            write_caches(work, self._state, self._caches)
        except BaseException:
            self._stopped.set()
            raise

    def __enter__(self) -> WritePipeline:
        return self

    def __exit__(self, *_exc) -> None:
        self.close()
