"""This machine, as `larder up`, the benchmarks and the tests use it: host:port addresses, free
ports and whether something listens on one, and the executables installed beside this Python."""

from __future__ import annotations

import socket
import sys
import time
from pathlib import Path


def host_port(address: str) -> tuple[str, int]:
    """`host:port` as (host, port); the last colon splits it."""
    host, _, port = address.rpartition(":")
    return host, int(port)


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on now (the kernel's pick)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def listening(port: int, host: str = "127.0.0.1", timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_for_port(port: int, timeout: float = 10.0, host: str = "127.0.0.1") -> None:
    """Return once something accepts connections on host:port; TimeoutError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if listening(port, host, timeout=0.2):
            return
        time.sleep(0.02)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout}s")


def executable(name: str) -> str:
    """The command `name` installed beside this Python (its virtualenv's bin/), else `name` for PATH."""
    beside_python = Path(sys.executable).with_name(name)
    return str(beside_python) if beside_python.exists() else name
