"""Helpers the tests share: real memcached processes, temporary projects, free ports."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from orchestration.config.load import Project, load_project


# Jane Doe's recommendations in the Braze page excerpted in tests/fixtures/braze-connected-content.txt.
JANE_RECOMMENDATIONS = {
    "concerts": [
        {"artist": "Aphex Twin", "location": "San Francisco, CA", "event_date": "2023-01-31"},
        {"artist": "Sultan + Shepard", "location": "San Francisco, CA", "event_date": "2023-02-25"},
    ],
    "upcoming_album_release": {
        "title": "Universal Language",
        "artist": "Simon Doty",
        "label": "Anjunadeep",
        "release_date": "2023-04-28",
    },
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


class MemcachedProcess:
    """A real memcached on a free port that a test can stop, restart and flush."""

    def __init__(self, memory_mb: int = 64, item_size: str = "2m"):
        binary = shutil.which("memcached")
        if binary is None:
            raise RuntimeError("memcached is not installed: `apt-get install -y memcached` (make test does this)")
        self.binary = binary
        self.memory_mb = memory_mb
        self.item_size = item_size
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    @property
    def server(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        command = [self.binary, "-l", "127.0.0.1", "-p", str(self.port), "-m", str(self.memory_mb),
                   "-I", self.item_size, "-U", "0"]
        if os.geteuid() == 0:
            command += ["-u", "root"]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(self.port)

    def stop(self) -> None:
        if self.process is not None:
            # SIGKILL: memcached takes ~0.7 s to exit on SIGTERM, and a test's cache is disposable.
            self.process.kill()
            self.process.wait(timeout=10)
            self.process = None

    def restart(self) -> None:
        """Stop and start again on the same port: everything cached is gone."""
        self.stop()
        self.start()

    def freeze(self) -> None:
        """SIGSTOP: it keeps accepting connections (the kernel does) but answers nothing."""
        os.kill(self.process.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        os.kill(self.process.pid, signal.SIGCONT)

    def flush(self) -> None:
        with socket.create_connection(("127.0.0.1", self.port)) as sock:
            sock.sendall(b"flush_all\r\n")
            sock.recv(64)


def postgres_base_url() -> str:
    return os.environ.get("LARDER_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def postgres_available() -> bool:
    return _listening(5432)


def mariadb_base_url() -> str:
    """The MariaDB server's URL without a database (tests create and drop their own)."""
    return os.environ.get("LARDER_TEST_MARIADB_URL", "mysql+pymysql://root@127.0.0.1:3306")


def mariadb_available() -> bool:
    return _listening(3306)


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


class ProjectFactory:
    """Builds a project in a temporary folder: larder.yaml, sync files, optional regions."""

    def __init__(self, root: Path, *, warehouse_url: str, state_url: str):
        self.root = root
        self.warehouse_url = warehouse_url
        self.state_url = state_url

    def __call__(
        self,
        syncs: list[dict[str, Any]],
        *,
        regions: dict[str, list[str]] | None = None,
        collections: dict[str, dict[str, Any]] | None = None,
        extra: dict[str, Any] | None = None,
        warehouse_url: str | None = None,
        state_url: str | None = None,
    ) -> Project:
        config = {
            "warehouse": {"url": warehouse_url or self.warehouse_url},
            "state": {"url": state_url or self.state_url},
            "regions": {name: {"servers": servers} for name, servers in (regions or {}).items()}
            or {"test": {"servers": ["127.0.0.1:1"]}},
            "collections": collections or {},
            "syncs": ["syncs/*.yaml"],
            **(extra or {}),
        }
        (self.root / "syncs").mkdir(exist_ok=True)
        for old in (self.root / "syncs").glob("*.yaml"):
            old.unlink()
        for sync in syncs:
            (self.root / "syncs" / f"{sync['name']}.yaml").write_text(yaml.safe_dump(sync, sort_keys=False))
        path = self.root / "larder.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return load_project(path)


class SlowClients:
    """Connections that dribble a request, one byte at a time, as a slow or hostile client does.

    `header` clients never finish their headers; `body` clients send complete headers for a POST
    promising more body than they ever send. A thread keeps every connection dribbling until the
    block ends; `open_count()` says how many the server has not closed yet.
    """

    def __init__(self, port: int, *, header: int = 4, body: int = 4, interval: float = 0.5, host: str = "127.0.0.1"):
        self.address = (host, port)
        self.counts = {"header": header, "body": body}
        self.interval = interval
        self._sockets: list[socket.socket] = []
        self._closed: set[int] = set()
        self._stop = None
        self._thread = None

    def __enter__(self) -> "SlowClients":
        import threading

        for kind, count in self.counts.items():
            for _ in range(count):
                sock = socket.create_connection(self.address, timeout=5)
                if kind == "body":
                    sock.sendall(b"POST /v1/collections/c/records/id HTTP/1.1\r\nHost: slow\r\n"
                                 b"Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n{")
                else:
                    sock.sendall(b"G")
                self._sockets.append(sock)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._dribble, daemon=True)
        self._thread.start()
        return self

    def _dribble(self) -> None:
        while not self._stop.wait(self.interval):
            for number, sock in enumerate(self._sockets):
                if number in self._closed:
                    continue
                try:
                    sock.sendall(b"X")
                except OSError:
                    self._closed.add(number)

    def open_count(self) -> int:
        """Connections the server has not closed (a closed one fails its next write)."""
        return len(self._sockets) - len(self._closed)

    def __exit__(self, *_exc) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        for sock in self._sockets:
            sock.close()


class TcpProxy:
    """tests/tcp_proxy.py in front of a TCP service, on one port across restarts: `freeze` hangs
    every connection (SIGSTOP), `kill` makes it refuse."""

    def __init__(self, target_host: str, target_port: int):
        self.port = free_port()
        self.target = (target_host, target_port)
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.tcp_proxy", str(self.port), self.target[0], str(self.target[1])],
            cwd=Path(__file__).resolve().parents[1])
        wait_for_port(self.port)

    def freeze(self) -> None:
        os.kill(self.process.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        os.kill(self.process.pid, signal.SIGCONT)

    def kill(self) -> None:
        if self.process is not None:
            self.thaw()
            self.process.kill()
            self.process.wait(timeout=10)
            self.process = None

    def ensure_running(self) -> None:
        if self.process is None:
            self.start()
        else:
            self.thaw()
