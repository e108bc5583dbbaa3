"""The sync's other processes (mapping workers, writers): where they come from and how they stop.

They are forked from a fork server: a process of its own that imported the sync's code and runs no
thread. Forking the sync's own process instead would copy it mid-flight: the locks its other
threads hold (cache writes, the lease heartbeat, Dagster's own) and DuckDB's state, held forever in
the copy, where a worker could wait on them for good. Stopping them is always bounded.
"""

from __future__ import annotations

import functools
import gc
import multiprocessing
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from multiprocessing.connection import Connection
from multiprocessing.context import BaseContext
from multiprocessing.process import BaseProcess
from typing import Any

# How long the sync waits for a message from its processes before it reports progress anyway.
WAIT_SECONDS = 1.0
# How long a stopped process has to exit, after SIGTERM, then after SIGKILL.
STOP_SECONDS = 5.0
# Cyclic GC thresholds while a run is going, in each of its processes (see rare_collections).
RUN_GC_THRESHOLDS = (100_000, 50, 1_000)
# What the fork server imports once, so that each process starts with the sync's code loaded.
PRELOADED = ["orchestration.sync.workers", "orchestration.sync.writers", "orchestration.sync.shares"]
FAILED = "failed"  # the last message of a process that failed: (FAILED, what went wrong, as text)


def process_context() -> BaseContext:
    """The fork server's context (spawn where there is no fork)."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(PRELOADED)
    return context


def start_processes(target: Callable[..., None], args: Sequence[tuple], name: str, *,
                    duplex: bool = True) -> dict[Connection, BaseProcess]:
    """One process per item of `args`, forked from the fork server, running `target(*item, its end of
    a pipe of its own)` and named `{name}-{index}`: the sync's end of each pipe → its process, in
    order. A process holds the only other end of its pipe, so its death reads as the end of it."""
    context = process_context()
    started: dict[Connection, BaseProcess] = {}
    try:
        for index, arguments in enumerate(args):
            receiver, sender = context.Pipe(duplex=duplex)
            process = context.Process(target=target, args=(*arguments, sender), name=f"{name}-{index}", daemon=True)
            process.start()
            sender.close()
            started[receiver] = process
    except BaseException:
        stop_processes(started)
        raise
    return started


def received(conn: Connection, process: BaseProcess, failure: type[Exception], what: str, when: str) -> tuple[str, Any]:
    """The process's next message, (kind, payload); raises `failure` if it failed (its text) or died
    (`what` it was, `when`). Its pipe ends, or is reset when it died with a message of ours unread."""
    try:
        kind, payload = conn.recv()
    except (EOFError, ConnectionResetError):
        raise failure(died(process, what, when)) from None
    if kind == FAILED:
        raise failure(payload)
    return kind, payload


def failed(error: BaseException, what: str) -> tuple[str, str]:
    """The message a process sends when it fails: its error as text (any exception, even one that
    does not pickle), saying `what` process it is."""
    return FAILED, f"{str(error) or type(error).__name__} (in {what} {os.getpid()})"


def died(process: BaseProcess, what: str, when: str) -> str:
    """What to say of a process whose pipe ended before it said it was done (waits for its exit code)."""
    process.join(timeout=WAIT_SECONDS)
    return f"{what} {process.name} died (exit code {process.exitcode}: killed, or out of memory?) {when}"


def stop_processes(started: Mapping[Connection, BaseProcess]) -> None:
    """Stop every process and close its pipe, however it is stuck: nothing of a process is needed
    once its job ends (it failed elsewhere, or it is still blocked sending). Never an unbounded wait."""
    for process in started.values():
        if process.is_alive():
            process.terminate()
    for receiver, process in started.items():
        process.join(timeout=STOP_SECONDS)
        if process.is_alive():
            process.kill()
            process.join(timeout=STOP_SECONDS)
        receiver.close()


@contextmanager
def rare_collections() -> Iterator[None]:
    """Run the cyclic garbage collector rarely. A sync allocates millions of short-lived objects
    and keeps a chunk of rows alive at a time: at the default thresholds the collector runs every
    700 allocations, promotes those rows and keeps triggering full collections over every object
    of the process (a seventh of a full sync's time, and half of a worker's). Reference counting
    still frees what is not cyclic at once; the previous thresholds come back when the block ends.
    Every process of a run (the sync's own, each worker) sets it."""
    previous = gc.get_threshold()
    gc.set_threshold(*RUN_GC_THRESHOLDS)
    try:
        yield
    finally:
        gc.set_threshold(*previous)


def collecting_rarely(target: Callable[..., None]) -> Callable[..., None]:
    """A process's target, run with `rare_collections` (the target stays importable by its name)."""

    @functools.wraps(target)
    def run(*args) -> None:
        with rare_collections():
            target(*args)

    return run
