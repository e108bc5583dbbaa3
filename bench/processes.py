"""Real local processes the tests and the benchmarks run against: memcached, a TCP proxy that can
freeze or refuse, clients that dribble, and where the test databases are."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading

from orchestration.config.load import REPO_ROOT
from orchestration.machine import free_port, listening, wait_for_port


class MemcachedProcess:
    """A real memcached on a free port that a test can stop, restart and flush."""

    def __init__(self, memory_mb: int = 64, item_size: str | None = "2m", threads: int | None = None):
        binary = shutil.which("memcached")
        if binary is None:
            raise RuntimeError("memcached is not installed: `apt-get install -y memcached` (`make memcached`)")
        self.binary = binary
        self.memory_mb = memory_mb
        self.item_size = item_size  # None: memcached's own default (1 MB)
        self.threads = threads
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    @property
    def server(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 10.0) -> None:
        command = [self.binary, "-l", "127.0.0.1", "-p", str(self.port), "-m", str(self.memory_mb), "-U", "0"]
        if self.item_size is not None:
            command += ["-I", self.item_size]
        if self.threads is not None:
            command += ["-t", str(self.threads)]
        if os.geteuid() == 0:
            command += ["-u", "root"]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(self.port, timeout)

    def __enter__(self) -> MemcachedProcess:
        self.start(timeout=20.0)
        return self

    def __exit__(self, *_exc) -> None:
        self.stop()

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
    return listening(5432)


def mariadb_base_url() -> str:
    """The MariaDB server's URL without a database (tests create and drop their own)."""
    return os.environ.get("LARDER_TEST_MARIADB_URL", "mysql+pymysql://root@127.0.0.1:3306")


def mariadb_available() -> bool:
    return listening(3306)



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

    def __enter__(self) -> SlowClients:
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
    """bench/tcp_proxy.py in front of a TCP service, on one port across restarts: `freeze` hangs
    every connection (SIGSTOP), `thaw` ends that, `kill` makes it refuse; `reply_delay` slows
    every answer."""

    def __init__(self, target_host: str, target_port: int, *, reply_delay: float = 0.0):
        self.port = free_port()
        self.target = (target_host, target_port)
        self.reply_delay = reply_delay
        self.process: subprocess.Popen | None = None

    def start(self) -> TcpProxy:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.tcp_proxy", str(self.port), self.target[0], str(self.target[1]),
             "--reply-delay", str(self.reply_delay)],
            cwd=REPO_ROOT)
        wait_for_port(self.port)
        return self

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
