"""The sync's other processes (mapping workers, writers): where they come from and how they stop.

They are forked from a fork server: a process of its own that imported the sync's code and runs no
thread. Forking the sync's own process instead would copy it mid-flight: the locks its other
threads hold (cache writes, the lease heartbeat, Dagster's own) and DuckDB's state, held forever in
the copy, where a worker could wait on them for good. Stopping them is always bounded.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Mapping
from multiprocessing.connection import Connection
from multiprocessing.context import BaseContext
from multiprocessing.process import BaseProcess

# How long the sync waits for a message from its processes before it reports progress anyway.
WAIT_SECONDS = 1.0
# How long a stopped process has to exit, after SIGTERM, then after SIGKILL.
STOP_SECONDS = 5.0
# What the fork server imports once, so that each process starts with the sync's code loaded.
PRELOADED = ["orchestration.sync.workers", "orchestration.sync.writers"]


def process_context() -> BaseContext:
    """The fork server's context (spawn where there is no fork)."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(PRELOADED)
    return context


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
