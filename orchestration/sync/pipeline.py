"""The write phase as a pipeline: a chunk's cache writes overlap the next chunk's state commit.

Each chunk is committed to state with its journal entry (apply.commit_changes), then written to
every region and its entry cleared (apply.write_caches). `CacheWriter` does the second step in a
thread of its own, in commit order, while the run commits the next chunk: the state store and
memcached work at once, each releasing the GIL while it waits.

Crash safety is apply's: an entry is cleared only after its chunk reached every region, so a run
killed anywhere leaves journal entries that the next run settles. Cache writes keep the commit
order (a key a chunk deletes may be one a later chunk sets). At most `behind` chunks wait for
the thread, so memory stays flat.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor

from orchestration.store.cache import RecordCache
from orchestration.store.state import CacheWork, StateStore
from orchestration.sync.apply import write_caches

# Chunks committed to state whose cache writes have not finished: one written, one waiting.
CHUNKS_BEHIND = 2


class CacheWriter:
    """Writes committed chunks to the caches in a background thread; `drain` waits for all of them.
    An error writing a cache is raised by the next `submit` or by `drain`."""

    def __init__(self, state: StateStore, caches: Mapping[str, RecordCache], *, behind: int = CHUNKS_BEHIND):
        self._state, self._caches, self._behind = state, caches, behind
        self._pending: deque[Future] = deque()
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="larder-cache-writer")

    def submit(self, work: CacheWork) -> None:
        self._pending.append(self._thread.submit(write_caches, work, self._state, self._caches))
        if len(self._pending) > self._behind:
            self._pending.popleft().result()

    def drain(self) -> None:
        """Wait until every chunk submitted is in every region and its journal entry cleared."""
        while self._pending:
            self._pending.popleft().result()

    def close(self) -> None:
        """Stop (after a failure: chunks not written yet keep their journal entries, for the next run)."""
        self._thread.shutdown(wait=True, cancel_futures=True)
        self._pending.clear()

    def __enter__(self) -> CacheWriter:
        return self

    def __exit__(self, *_exc) -> None:
        self.close()
