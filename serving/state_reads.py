"""The API's reads of the durable state: each bounded in time, refused at once while the store fails.

A sync gunicorn worker answers one request at a time, so a state read that hangs would hold the
worker, and the cached lookups queued behind it. Each read therefore runs on a small thread pool
and the request waits at most `deadline` seconds for it. Once a read has failed or timed out,
reads are refused at once (503 state_unavailable, never a 404) until a background probe finds the
store answering again, every `retry_after` seconds: a hung store costs each worker one deadline,
not one per request. The engine's own timeouts (serving/app.py) free a thread stuck on a hung
connection later.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import TypeVar

import sqlalchemy.exc

from orchestration.store.state import API_BOUNDS, StateStore
from serving.contract import STATE_RETRY_AFTER_SECONDS
from serving.errors import ThrottledLog, describe_error

log = logging.getLogger("larder.api")
THROTTLED = ThrottledLog(log)

T = TypeVar("T")

# Bounds on the API's use of the state store (its connections' own are API_BOUNDS, beside a sync's
# longer ones in orchestration/store/state/engine.py). A request waits at most
# STATE_DEADLINE_SECONDS for a state read, then answers 503 state_unavailable with
# Retry-After: STATE_RETRY_AFTER_SECONDS.
STATE_DEADLINE_SECONDS = 1.0

# What a failing store raises: the driver's errors (wrapped by SQLAlchemy), the pool's timeout, sockets.
STORE_ERRORS = (sqlalchemy.exc.SQLAlchemyError, OSError)


class StateUnavailable(RuntimeError):
    """The state store did not answer (in time); the message is safe to show and log."""


class StateReads:
    """Runs the API's state reads with a deadline; refuses them while the store is failing."""

    def __init__(self, state: StateStore, *, deadline: float, retry_after: float, threads: int = 4):
        self._state = state
        self._deadline = deadline
        self._retry_after = retry_after
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="larder-state")
        # Reads in flight: when every thread is stuck on a hung store, a new read is refused, not queued.
        self._slots = threading.BoundedSemaphore(threads)
        self._lock = threading.Lock()
        self._failing = False
        self._probe: threading.Thread | None = None

    @property
    def failing(self) -> bool:
        return self._failing

    def __call__(self, read: Callable[[], T]) -> T:
        """`read()`'s result, or StateUnavailable within `deadline` seconds."""
        if self._failing:
            raise StateUnavailable("the state store is not answering")
        if not self._slots.acquire(blocking=False):
            raise StateUnavailable("the state store is not answering (every read is waiting on it)")
        try:
            future = self._pool.submit(self._run, read)
        except RuntimeError as error:  # the pool is shut down (the app is being replaced)
            self._slots.release()
            raise StateUnavailable("the state store is not available to this worker") from error
        try:
            return future.result(timeout=self._deadline)
        except FutureTimeout:
            self._fail(f"no answer within {self._deadline:g} s")
            raise StateUnavailable(f"the state store did not answer within {self._deadline:g} s") from None
        except STORE_ERRORS as error:
            self._fail(describe_error(error))
            raise StateUnavailable(f"the state store failed to answer ({type(error).__name__})") from error

    def in_background(self, work: Callable[[], None]) -> bool:
        """Run `work` on the pool without waiting for it; False (and nothing run) while the store
        is failing or every thread is busy. `work` handles its own errors."""
        if self._failing or not self._slots.acquire(blocking=False):
            return False
        try:
            self._pool.submit(self._run_in_background, work)
        except RuntimeError:  # the pool is shut down
            self._slots.release()
            return False
        return True

    def _run(self, read: Callable[[], T]) -> T:
        try:
            return read()
        finally:
            self._slots.release()

    def _run_in_background(self, work: Callable[[], None]) -> None:
        try:
            work()
        except Exception:  # nobody waits for this future: a bug would vanish with it unless logged here
            log.exception("a background read of the state store failed unexpectedly")
        finally:
            self._slots.release()

    def _fail(self, what: str) -> None:
        THROTTLED.warning("state", "state store unavailable: %s; lookups that miss the cache answer 503 "
                          "until it answers again", what)
        with self._lock:
            self._failing = True
            if self._probe is None:
                self._probe = threading.Thread(target=self._probe_until_answered, name="larder-state-probe",
                                               daemon=True)
                self._probe.start()

    def _probe_until_answered(self) -> None:
        stop = threading.Event()
        while not stop.wait(self._retry_after):
            try:
                self._state.ping()
            except STORE_ERRORS as error:  # still failing: the next probe is `retry_after` from now
                THROTTLED.warning("state", "state store unavailable: %s", describe_error(error))
                continue
            except Exception:  # a bug, not an outage: say so loudly, and keep probing (reads wait on it)
                log.exception("probing the state store failed unexpectedly")
                continue
            with self._lock:
                self._failing = False
                self._probe = None
            THROTTLED.recovered("state", "state store answers again")
            return

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def api_state_store(url: str) -> StateStore:
    """The state store as the API reads it: every connection and statement bounded."""
    return StateStore(url, bounds=API_BOUNDS)


def api_state_reads(state: StateStore) -> StateReads:
    """The API's bounded reads of `state` (a thread pool of this worker)."""
    return StateReads(state, deadline=STATE_DEADLINE_SECONDS, retry_after=STATE_RETRY_AFTER_SECONDS)
