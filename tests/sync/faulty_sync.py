"""Test-only entry point: `larder` with a fault injected after each chunk's state commit.

Tests that kill or slow a real sync process run it as

    python -m tests.sync.faulty_sync [--mark FILE] [--hold-after N] [--pause-after-commit S] -- <larder args>

which wraps `StateStore.commit_chunk` (the commit of a chunk, before its cache writes) and then runs
the CLI in this process. After each chunk commits, the wrapper:
- writes the number of chunks committed so far to `--mark` (replaced atomically), the event a test waits for;
- with `--hold-after N`, stops for good once chunk N has committed and the chunks before it are in
  every cache (their writes overlap the next commit: `orchestration/sync/pipeline.py`), so exactly
  one chunk's state is ahead of the caches: the test kills the process there;
- with `--pause-after-commit S`, sleeps S seconds: a slow writer, for the lease races.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from pathlib import Path

from orchestration.cli import main
from orchestration.store.state import StateStore


def install(*, mark: Path | None = None, hold_after: int | None = None, pause: float = 0.0) -> None:
    original, original_cache_written = StateStore.commit_chunk, StateStore.cache_written
    committed = 0
    cached = threading.Condition()
    cached_count = 0

    def cache_written(self, *args, **kwargs):
        nonlocal cached_count
        original_cache_written(self, *args, **kwargs)
        with cached:
            cached_count += 1
            cached.notify_all()

    def commit_chunk(self, *args, **kwargs):
        nonlocal committed
        work = original(self, *args, **kwargs)
        committed += 1
        if hold_after is not None and committed >= hold_after:
            with cached:
                cached.wait_for(lambda: cached_count >= committed - 1)
        if mark is not None:
            partial = mark.with_name(mark.name + ".partial")
            partial.write_text(str(committed))
            os.replace(partial, mark)
        if hold_after is not None and committed >= hold_after:
            threading.Event().wait()  # until killed
        if pause:
            time.sleep(pause)
        return work

    StateStore.commit_chunk = commit_chunk  # type: ignore[method-assign]
    StateStore.cache_written = cache_written  # type: ignore[method-assign]


def wait_for_chunks(mark: Path, at_least: int, process, timeout: float = 60) -> None:
    """Return once the process has committed `at_least` chunks (as its mark file says)."""
    deadline = time.monotonic() + timeout
    while not (mark.exists() and int(mark.read_text()) >= at_least):
        assert process.poll() is None, "the sync finished before it could be stopped"
        if time.monotonic() > deadline:
            raise TimeoutError(f"the sync never committed {at_least} chunks")
        time.sleep(0.01)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="faulty_sync")
    parser.add_argument("--mark", type=Path)
    parser.add_argument("--hold-after", type=int)
    parser.add_argument("--pause-after-commit", type=float, default=0.0)
    parser.add_argument("larder", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    install(mark=args.mark, hold_after=args.hold_after, pause=args.pause_after_commit)
    larder_args = args.larder[1:] if args.larder[:1] == ["--"] else args.larder
    sys.exit(main(larder_args))
