"""The real processes a benchmark runs against: memcached, gunicorn servers, the `larder` command."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from bench.processes import MemcachedProcess
from orchestration.config.load import REPO_ROOT

GUNICORN_CONF = REPO_ROOT / "serving" / "gunicorn.conf.py"
REGION = "bench"
TIME = "/usr/bin/time"


@dataclass
class ProcessRun:
    """How one measured subprocess went: exit code, wall seconds, peak RSS, its output."""

    returncode: int
    wall_seconds: float
    max_rss_mb: float  # the largest process of its tree (wait4 reports the largest waited-for descendant)
    stdout: str
    stderr: str
    max_tree_rss_mb: float = 0.0  # the largest sum over its process tree, sampled (see run_measured)
    max_tree_pss_mb: float = 0.0  # the same with shared pages divided among the processes sharing them

    def check(self, what: str) -> ProcessRun:
        if self.returncode != 0:
            raise RuntimeError(f"{what} exited with {self.returncode}:\n{self.stderr[-2000:]}{self.stdout[-2000:]}")
        return self


def run_measured(command: Sequence[str], *, env: dict[str, str], cwd: Path, timeout: float) -> ProcessRun:
    """Run a command to completion and read its own peak RSS.

    Through /usr/bin/time when installed: a child forked straight from this process would report
    this process's peak too (Linux carries a forked memory's high-water mark across exec), and
    the benchmark's own process holds DuckDB data. Without it, wait4's figure is an upper bound.
    Every 0.1 s the RSS of the command's whole process tree (its worker processes included) is
    summed: an upper bound of what the tree holds, as pages the processes share (the libraries, what
    the fork server had loaded) count once in each. The PSS is summed too, each shared page divided
    among the processes that share it: what the tree holds.
    """
    out_path, err_path, rss_path = cwd / ".run.stdout", cwd / ".run.stderr", cwd / ".run.maxrss"
    rss_path.unlink(missing_ok=True)
    if Path(TIME).exists():
        command = [TIME, "--format", "%M", "--output", str(rss_path), *command]
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        started = time.monotonic()
        process = subprocess.Popen(list(command), env=env, cwd=cwd, stdout=out, stderr=err)
        deadline, sampled, tree_kb, tree_pss_kb = started + timeout, 0.0, 0, 0
        while True:
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() - sampled >= 0.1:
                rss_kb, pss_kb = _tree_memory_kb(process.pid)
                tree_kb, tree_pss_kb, sampled = max(tree_kb, rss_kb), max(tree_pss_kb, pss_kb), time.monotonic()
            if time.monotonic() > deadline:
                process.kill()
                pid, status, usage = os.wait4(process.pid, 0)
                break
            time.sleep(0.01)
        wall = time.monotonic() - started
    process.returncode = os.waitstatus_to_exitcode(status)  # tell Popen it was reaped
    reported = rss_path.read_text().split() if rss_path.exists() else []
    max_rss_kb = int(reported[-1]) if reported and reported[-1].isdigit() else usage.ru_maxrss  # kilobytes
    return ProcessRun(
        returncode=process.returncode,
        wall_seconds=wall,
        max_rss_mb=max_rss_kb / 1024,
        stdout=out_path.read_text(errors="replace"),
        stderr=err_path.read_text(errors="replace"),
        max_tree_rss_mb=max(tree_kb, max_rss_kb) / 1024,
        max_tree_pss_mb=tree_pss_kb / 1024,
    )


_PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024


def _tree_memory_kb(root: int) -> tuple[int, int]:
    """The RSS and the PSS of `root` and every process under it, summed, in kilobytes (a process
    gone meanwhile counts 0)."""
    rss, pss, pending = 0, 0, [root]
    while pending:
        pid = pending.pop()
        try:
            rss += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * _PAGE_KB
            pss += _pss_kb(pid)
            pending += _children(pid)
        except (OSError, ValueError, IndexError):
            continue
    return rss, pss


def _pss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    return 0


def bench_memcached(memory_mb: int) -> MemcachedProcess:
    """A memcached for a benchmark (a `with` block starts and stops it): two threads, default item size."""
    return MemcachedProcess(memory_mb=memory_mb, item_size=None, threads=2)


class BenchProject:
    """A temporary Larder project: a DuckDB warehouse (or the one `warehouse_url` names), SQLite
    state, one region on one memcached."""

    def __init__(self, root: Path, memcached_server: str, *, warehouse_url: str | None = None):
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self.warehouse_path = root / "warehouse.duckdb"
        self.warehouse_url = warehouse_url or f"duckdb:///{self.warehouse_path}"
        self.config_path = root / "larder.yaml"
        self.memcached_server = memcached_server

    def write(self, syncs: list[dict[str, Any]], *, chunk_size: int | None = None) -> None:
        config: dict[str, Any] = {
            "warehouse": {"url": self.warehouse_url},
            "state": {"url": f"sqlite:///{self.root / 'state.db'}"},
            "regions": {REGION: {"servers": [self.memcached_server]}},
            "syncs": ["syncs/*.yaml"],
        }
        if chunk_size:
            config["defaults"] = {"chunk_size": chunk_size}
        (self.root / "syncs").mkdir(exist_ok=True)
        for sync in syncs:
            (self.root / "syncs" / f"{sync['name']}.yaml").write_text(yaml.safe_dump(sync, sort_keys=False))
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))

    def env(self, **extra: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update(LARDER_CONFIG=str(self.config_path), LARDER_HOME=str(self.root), LARDER_LOG_LEVEL="warning")
        env.update(extra)
        return env

    def larder_command(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "orchestration.cli", *args]

    def larder(self, *args: str, timeout: float = 600) -> ProcessRun:
        """Run the `larder` command on this project, measured."""
        return run_measured(self.larder_command(*args), env=self.env(), cwd=self.root, timeout=timeout)

    def create_api_key(self) -> str:
        run = self.larder("keys", "create", "--name", f"bench-{time.monotonic_ns()}", "--quiet", timeout=60)
        return run.check("larder keys create").stdout.strip()


class HttpServer:
    """A server (`larder serve` or `serving.launcher`) started as its own process group; stopped by its pid."""

    def __init__(self, name: str, command: list[str], *, env: dict[str, str], port: int, log_path: Path):
        self.name = name
        self.command = command
        self.env = env
        self.port = port
        self.log_path = log_path
        self.process: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> HttpServer:
        self._log = open(self.log_path, "ab")
        self.process = subprocess.Popen(self.command, env=self.env, cwd=REPO_ROOT, stdout=self._log,
                                        stderr=subprocess.STDOUT, start_new_session=True)
        try:
            self._wait_for_an_answer(timeout=60)
        except TimeoutError:
            self.__exit__()
            raise RuntimeError(f"{self.name} did not start; see {self.log_path}") from None
        return self

    def _wait_for_an_answer(self, timeout: float) -> None:
        """Until a worker has loaded the app and answers (any status: the bare app has no /healthz)."""
        import requests

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise TimeoutError(f"{self.name} exited with {self.process.returncode}")
            try:
                requests.get(f"{self.base_url}/healthz", timeout=5)
                return
            except requests.RequestException:
                time.sleep(0.1)
        raise TimeoutError(f"{self.name} did not answer within {timeout}s")

    def worker_pids(self) -> list[int]:
        """The gunicorn workers: children of the gunicorn master the launcher started."""
        assert self.process is not None
        pids: list[int] = []
        for master in _children(self.process.pid):
            if b"gunicorn" in Path(f"/proc/{master}/cmdline").read_bytes():
                pids += _children(master)
        return pids

    def __exit__(self, *_exc) -> None:
        if self.process is None:
            return
        self.process.send_signal(signal.SIGTERM)  # gunicorn's graceful stop takes its workers along
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)  # the group this server was started in
            self.process.wait(timeout=10)
        self.process = None
        self._log.close()


def _children(pid: int) -> list[int]:
    pids: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        pids += [int(child) for child in (task / "children").read_text().split()]
    return pids


def http_parser() -> str:
    """The parser both servers use: gunicorn's C parser (gunicorn[fast]) when installed."""
    try:
        import gunicorn_h1c  # noqa: F401
    except ImportError:
        return "python"
    return "fast"


def gunicorn_settings() -> dict[str, Any]:
    """What serving/gunicorn.conf.py sets (workers, worker class, keep-alive...)."""
    import runpy

    saved = dict(os.environ)
    try:  # reading the file must not leave its metrics folder in this process's environment
        conf = runpy.run_path(str(GUNICORN_CONF))
    finally:
        if os.environ.get("LARDER_OWNS_METRICS_DIR") == "1" and "PROMETHEUS_MULTIPROC_DIR" not in saved:
            shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)
        os.environ.clear()
        os.environ.update(saved)
    return {name: conf[name] for name in ("workers", "worker_class", "keepalive", "timeout") if name in conf}
