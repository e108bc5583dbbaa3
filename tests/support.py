"""Helpers the tests share: real memcached processes, temporary projects, free ports."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import yaml

from orchestration.config.load import Project, load_project


# Jane Doe's recommendations in ../shared/reference/braze-hightouch-integration.txt.
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
