"""One writer per collection at a time: a durable lease in the state store.

Several syncs may write disjoint fields of one collection. Each chunk composes the merged records
from state inside its transaction and writes them to the cache after the commit, so two runs
writing one collection at once could leave the older composition cached (the last cache writer
wins, whatever it read). A run therefore holds its collection's lease from before it reads the
snapshot until after its last cache write; a second run waits for it.

The lease is a row of `collection_leases` (SQLite or Postgres, no other service): taken in one
statement when free or expired, renewed with the run's heartbeat and inside every chunk's
transaction (so a run that lost its lease cannot commit), deleted at the end, failed or not.
A holder that dies without releasing it is overtaken once the lease expires, or at once when it
was a process on this host that no longer exists (hosts sharing a state store need distinct
hostnames, and clocks that agree to well within LEASE_SECONDS).
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Callable

from orchestration.store.state import Lease, StateStore

# How long a lease outlives its holder's last renewal. Renewals come with every chunk, so this
# only bounds how long a crashed run on another host blocks the collection.
LEASE_SECONDS = 120.0
POLL_SECONDS = 0.5
_HOST = socket.gethostname()


class LeaseUnavailable(RuntimeError):
    """Another run kept the collection's lease for longer than this run would wait."""


class LeaseLost(RuntimeError):
    """The lease expired and another run took it: this run must not write any more."""


class CollectionLease:
    """The right to write one collection; see the module docstring."""

    def __init__(self, state: StateStore, collection: str, holder: str, *, run_id: int | None = None,
                 ttl: float = LEASE_SECONDS):
        self.state = state
        self.collection = collection
        self.holder = holder
        self.run_id = run_id
        self.ttl = ttl
        self.token = uuid.uuid4().hex

    @classmethod
    def held(cls, state: StateStore, collection: str, holder: str, token: str, *, run_id: int | None,
             ttl: float) -> CollectionLease:
        """A lease another process of the run acquired (its `token`), to renew from this one."""
        lease = cls(state, collection, holder, run_id=run_id, ttl=ttl)
        lease.token = token
        return lease

    def acquire(self, *, wait_seconds: float, on_wait: Callable[[Lease], None] | None = None,
                poll_seconds: float = POLL_SECONDS) -> None:
        """Take the lease, waiting up to `wait_seconds` for its holder; raises LeaseUnavailable."""
        deadline = time.monotonic() + wait_seconds
        while not self.try_acquire():
            current = self.state.lease_of(self.collection)
            if current is None:
                continue  # released since the attempt: try again at once
            if time.monotonic() >= deadline:
                raise LeaseUnavailable(
                    f"collection {self.collection!r} is being written by {current.holder} "
                    f"(host {current.host}, pid {current.pid}; its lease expires in "
                    f"{max(0.0, current.expires_at - time.time()):.0f} s unless renewed); "
                    f"gave up after waiting {wait_seconds:g} s"
                )
            if on_wait is not None:
                on_wait(current)
            time.sleep(poll_seconds)

    def try_acquire(self) -> bool:
        """Take the lease if it is free, expired or held by a dead process of this host. The run
        that held a lease taken over is marked failed: it will never finish by itself."""
        before = self.state.lease_of(self.collection)
        if self.state.acquire_lease(self._row()):
            if before is not None and before.token != self.token:
                expired = max(0.0, time.time() - before.expires_at)
                self._fail_overtaken(before, f"its lease expired {expired:.0f} s earlier without being renewed")
            return True
        current = self.state.lease_of(self.collection)
        if current is not None and _died_here(current) and self.state.take_over_lease(current.token, self._row()):
            self._fail_overtaken(current, f"its process (pid {current.pid} on host {current.host}) no longer exists")
            return True
        return False

    def renew(self, conn=None) -> None:
        """Extend the lease (inside `conn`'s transaction if given); raises LeaseLost if it was taken."""
        if not self.state.renew_lease(self.collection, self.token, time.time() + self.ttl, conn):
            raise LeaseLost(
                f"{self.holder} lost its lease on collection {self.collection!r} (it was not renewed for "
                f"{self.ttl:g} s and another run took it); stopped before writing more"
            )

    def release(self) -> None:
        self.state.release_lease(self.collection, self.token)

    def _fail_overtaken(self, previous: Lease, why: str) -> None:
        if previous.run_id is not None:
            self.state.fail_overtaken_run(
                previous.run_id,
                f"stopped without finishing: {why}, and {self.holder} took over its lease on collection "
                f"{self.collection!r}",
            )

    def _row(self) -> Lease:
        return Lease(self.collection, self.token, self.holder, self.run_id, _HOST, os.getpid(), time.time() + self.ttl)


def _died_here(lease: Lease) -> bool:
    """True if the lease's holder was a process of this host that no longer exists."""
    if lease.host != _HOST:
        return False
    try:
        os.kill(lease.pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # it exists, under another user
        return False
    return False
