"""State reads in place of the cache, bounded: a host's workers never all wait on the state store.

A lookup the cache cannot answer (a miss, a server lost or frozen) reads the durable state. When
memcached loses one server of three, a third of all lookups do; when the state store hangs, each
of them holds its worker until the store's timeout. So at most `slots` workers of a host (its
workers less one, under `larder serve`) read the state at a time, and the others keep answering
from the cache:

- a free slot: take it, read the state;
- none free, and every holder started less than `stuck_after` (1 s) ago (the store is busy,
  not stuck): wait for one, up to `patience` (0.1 s), then give up;
- none free and a holder has been at it longer than `stuck_after` (the store is slow or hung):
  give up at once.

Giving up is 503 `state_unavailable` with Retry-After, instead of piling onto the store.

Slots are `flock`s on files in the runtime folder `larder serve` gives gunicorn: shared by the
host's workers, released by the kernel if a worker dies holding one. Each holds the monotonic
time it was taken. Outside `larder serve` (no runtime folder) reads are not bounded.
"""

from __future__ import annotations

import fcntl
import os
import struct
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from serving import errors

RUNTIME_ENV = "LARDER_SERVE_RUNTIME"
PATIENCE_SECONDS = 0.1
STUCK_AFTER_SECONDS = 1.0
POLL_SECONDS = 0.002
_STAMP = struct.Struct("d")
_FREE = _STAMP.pack(0.0)


class StateReadSlots:
    def __init__(self, folder: Path, slots: int, *, patience: float = PATIENCE_SECONDS,
                 stuck_after: float = STUCK_AFTER_SECONDS):
        self.folder = folder
        self.slots = slots
        self.patience = patience
        self.stuck_after = stuck_after
        self._fds: list[int] | None = None  # opened in the worker that uses them (never across a fork)

    def _descriptors(self) -> list[int]:
        if self._fds is None:
            self._fds = [os.open(self.folder / f"state-read-{n}.slot", os.O_RDWR | os.O_CREAT, 0o600)
                         for n in range(self.slots)]
        return self._fds

    @contextmanager
    def hold(self) -> Iterator[None]:
        """Hold a slot while the block reads the state; raise 503 state_unavailable if none comes."""
        fd = self._take() or self._wait_for_one()
        try:
            yield
        finally:
            os.pwrite(fd, _FREE, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)

    def _take(self) -> int | None:
        for fd in self._descriptors():
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue
            os.pwrite(fd, _STAMP.pack(time.monotonic()), 0)
            return fd
        return None

    def _wait_for_one(self) -> int:
        deadline = time.monotonic() + self.patience
        while time.monotonic() < deadline and not self._a_holder_is_stuck():
            time.sleep(POLL_SECONDS)
            fd = self._take()
            if fd is not None:
                return fd
        raise errors.state_unavailable(
            f"{self.slots} lookup(s) on this server are already waiting on the state store; retry")

    def _a_holder_is_stuck(self) -> bool:
        """A slot was taken more than `stuck_after` ago and is still held: the store is slow or hung."""
        now = time.monotonic()
        for fd in self._descriptors():
            stamp = os.pread(fd, _STAMP.size, 0)
            if len(stamp) == _STAMP.size and stamp != _FREE and now - _STAMP.unpack(stamp)[0] > self.stuck_after:
                return True
        return False


_slots: StateReadSlots | None = None


def configure(workers: int) -> None:
    """In a gunicorn worker of `larder serve`: bound state reads to `workers - 1` at a time."""
    global _slots
    runtime = os.environ.get(RUNTIME_ENV)
    _slots = StateReadSlots(Path(runtime), max(1, workers - 1)) if runtime else None


@contextmanager
def state_read_slot() -> Iterator[None]:
    """Around a state read on the request path (a no-op where `configure` was not called)."""
    if _slots is None:
        yield
    else:
        with _slots.hold():
            yield
