"""Beside a region's API: rebuild its Memcached from the state as soon as a server lost its data.

`larder serve` (serving/region.py) runs one `CacheLossWatcher` per region it serves (one per host, however many
workers). Every second it reads the sentinel that `rehydrate_region` leaves on each server; a
server that answers without it was restarted, flushed, replaced or evicted it, so the region is
rehydrated at once by a `larder rehydrate --region R` subprocess, off the request path and without
waiting for Dagster's cache-loss sensor. Read-through alone refills a lost cache one miss at a
time, each a state read: minutes at a fraction of the cached rate.

One rehydrate at a time per host; hosts (and the Dagster sensor) that start one together are
serialised by the collections' leases, and the last one's sentinel stops the others' next check.
While a server is unreachable nothing is done (there is nothing to write into yet); the lookups
of its keys are answered from the state meanwhile.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

from orchestration.store.cache import CacheUnavailable, RecordCache

CHECK_INTERVAL_SECONDS = 1.0
RETRY_AFTER_FAILURE_SECONDS = (5, 10, 30, 60)  # a rehydrate that failed is retried after these


class CacheLossWatcher:
    """A thread that rehydrates `region` whenever one of its servers is seen without the sentinel."""

    def __init__(self, config: Path, region: str, servers: Sequence[str], *, interval: float = CHECK_INTERVAL_SECONDS):
        self.config = config
        self.region = region
        self.servers = tuple(servers)
        self.interval = interval
        self.rehydrates = 0  # started, for tests and logs
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._running: subprocess.Popen | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._watch, name=f"cache-watch-{self.region}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        running = self._running
        if running is not None and running.poll() is None:
            running.terminate()  # a half-done rehydrate is safe: the next check starts it again
        if self._thread is not None:
            self._thread.join(timeout=15)

    def _watch(self) -> None:
        cache = RecordCache(self.servers)
        failures = 0
        try:
            while not self._stop.wait(self.interval):
                missing = self._servers_missing_sentinel(cache)
                if not missing:
                    continue
                if self._rehydrate(missing):
                    failures = 0
                    continue
                pause = RETRY_AFTER_FAILURE_SECONDS[min(failures, len(RETRY_AFTER_FAILURE_SECONDS) - 1)]
                failures += 1
                self._say(f"rehydrate failed; next attempt in {pause} s")
                self._stop.wait(pause)
        finally:
            cache.close()

    def _servers_missing_sentinel(self, cache: RecordCache) -> list[str]:
        try:
            return cache.servers_missing_sentinel()
        except CacheUnavailable:
            return []  # a server is unreachable: nothing to write into yet

    def _rehydrate(self, missing: list[str]) -> bool:
        self._say(f"{', '.join(missing)} lost its data (no sentinel): rehydrating the region from the state")
        self.rehydrates += 1
        command = [sys.executable, "-m", "orchestration.cli", "--config", str(self.config),
                   "rehydrate", "--region", self.region]
        self._running = subprocess.Popen(command, stdin=subprocess.DEVNULL)
        try:
            return self._running.wait() == 0 and not self._stop.is_set()
        finally:
            self._running = None

    def _say(self, message: str) -> None:
        print(f"larder: region {self.region}: {message}", file=sys.stderr, flush=True)
