"""`make chaos`: a served region under wrk load while its dependencies fail, one fault per phase.

The region is what `larder serve` runs in production: nginx in front of gunicorn (3 workers),
three memcached servers, a Postgres state store reached through a TCP proxy this harness can
freeze (SIGSTOP: connections accepted, nothing answered) or kill (refused). `larder sync` fills
it; every id the load asks for exists, so any 404 is a false one. Each phase loads the region for
`--seconds` (wrk, random ids), injects its fault two seconds in and lifts it before the end, then
waits until the region has recovered (every server holds its sentinel, /readyz answers) before
the next phase. Printed per phase, and written to bench/results/chaos.json: requests, answers by
status, false 404s, socket errors, p50/p99/worst latency, state reads per second (the API's
`larder_state_fallbacks_total`) and how long recovery took.

    python -m bench.chaos [--seconds 10] [--records 20000] [--only PHASE ...]

Needs Postgres at 127.0.0.1:5432 (or $LARDER_TEST_POSTGRES_URL), memcached, nginx and wrk.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests
import yaml

from bench import data
from bench.processes import MemcachedProcess, SlowClients, TcpProxy, postgres_base_url
from orchestration.config.load import REPO_ROOT
from orchestration.machine import free_port

LUA = Path(__file__).with_name("chaos.lua")
RESULTS = Path(__file__).with_name("results") / "chaos.json"
MARKER = "CHAOS_JSON "
REGION = "chaos"
SYNC_NAME = "chaos_users"
COLLECTION = data.sync_spec(SYNC_NAME)["collection"]
FAULT_AT = 2.0  # seconds into a phase
RECOVERY_TIMEOUT = 120.0


class Region:
    """Three memcached servers, the state proxy, the API (`larder serve`), a key, the ids file."""

    def __init__(self, root: Path, records: int, record_bytes: int, workers: int):
        self.root = root
        self.records = records
        self.record_bytes = record_bytes
        self.workers = workers
        self.memcached = [MemcachedProcess(memory_mb=256) for _ in range(3)]
        base = urlsplit(postgres_base_url())
        self.state_proxy = TcpProxy(base.hostname or "127.0.0.1", base.port or 5432)
        self.schema = f"larder_chaos_{uuid.uuid4().hex[:10]}"
        self.port = free_port()
        self.api: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, log) -> None:
        import sqlalchemy as sa

        for server in self.memcached:
            server.start()
        self.state_proxy.start()
        admin = sa.create_engine(postgres_base_url())
        with admin.begin() as conn:
            conn.execute(sa.text(f'create schema "{self.schema}"'))
        admin.dispose()
        self._write_project()
        log(f"chaos: syncing {self.records:,} records into 3 memcached servers and Postgres (via the proxy)")
        data.create_users(self.root / "warehouse.duckdb", self.records, record_bytes=self.record_bytes)
        self._larder("sync", SYNC_NAME, timeout=600)
        self.secret = self._larder("keys", "create", "--name", "chaos", "--quiet", timeout=60).strip()
        self.ids = self.root / "ids.txt"
        self.ids.write_text("".join(f"{n}\n" for n in range(self.records)))
        self._serve()
        self.wait_recovered(log)

    def _write_project(self) -> None:
        base = urlsplit(postgres_base_url())
        user = f"{base.username}@" if base.username else ""
        state_url = (f"postgresql+psycopg://{user}127.0.0.1:{self.state_proxy.port}{base.path}"
                     f"?options=-csearch_path%3D{self.schema}")
        config = {
            "warehouse": {"url": f"duckdb:///{self.root / 'warehouse.duckdb'}"},
            "state": {"url": state_url},
            "regions": {REGION: {"servers": [m.server for m in self.memcached]}},
            "syncs": ["syncs/*.yaml"],
        }
        (self.root / "syncs").mkdir(exist_ok=True)
        (self.root / "syncs" / f"{SYNC_NAME}.yaml").write_text(yaml.safe_dump(data.sync_spec(SYNC_NAME)))
        self.config = self.root / "larder.yaml"
        self.config.write_text(yaml.safe_dump(config, sort_keys=False))

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
        env.update(LARDER_CONFIG=str(self.config), LARDER_HOME=str(self.root), LARDER_LOG_LEVEL="warning")
        return env

    def _larder(self, *args: str, timeout: float) -> str:
        done = subprocess.run([sys.executable, "-m", "orchestration.cli", *args], cwd=REPO_ROOT, env=self._env(),
                              capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            raise RuntimeError(f"larder {' '.join(args)} failed: {done.stderr[-2000:]}")
        return done.stdout

    def _serve(self) -> None:
        self.log = open(self.root / "api.log", "ab")
        self.api = subprocess.Popen(
            [sys.executable, "-m", "orchestration.cli", "serve", "--region", REGION,
             "--bind", f"127.0.0.1:{self.port}", "--workers", str(self.workers)],
            cwd=REPO_ROOT, env=self._env(), stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)

    def worker_pids(self) -> list[int]:
        pids = []
        for master in _children(self.api.pid):
            if b"gunicorn" in Path(f"/proc/{master}/cmdline").read_bytes():
                pids += _children(master)
        return pids

    def wait_recovered(self, log) -> float:
        """Until every fault is lifted, every server holds its sentinel and /readyz answers 200."""
        from orchestration.store.cache import CacheUnavailable, RecordCache

        started = time.monotonic()
        for server in self.memcached:
            if server.process is None:
                server.start()
            else:
                server.thaw()
        self.state_proxy.ensure_running()
        cache = RecordCache([m.server for m in self.memcached])
        try:
            while time.monotonic() - started < RECOVERY_TIMEOUT:
                try:
                    ready = requests.get(f"{self.base_url}/readyz", timeout=5).status_code == 200
                    if ready and not cache.servers_missing_sentinel():
                        return time.monotonic() - started
                except (requests.RequestException, CacheUnavailable):
                    pass
                time.sleep(0.25)
        finally:
            cache.close()
        log(f"chaos: WARNING the region did not recover within {RECOVERY_TIMEOUT:.0f} s")
        return time.monotonic() - started

    def metrics(self, timeout: float = 10) -> dict[str, float]:
        """The API's state reads (fallbacks) and cache hits so far, summed over labels."""
        text = requests.get(f"{self.base_url}/metrics", timeout=timeout).text
        totals = {"state_fallbacks": 0.0, "cache_hits": 0.0}
        for line in text.splitlines():
            for name, total in (("larder_state_fallbacks_total", "state_fallbacks"),
                                ("larder_cache_hits_total", "cache_hits")):
                if line.startswith(name + "{") or line.startswith(name + " "):
                    totals[total] += float(line.rsplit(" ", 1)[1])
        return totals

    def stop(self) -> None:
        import sqlalchemy as sa

        if self.api is not None:
            self.api.terminate()
            try:
                self.api.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.api.pid, signal.SIGKILL)
            self.log.close()
        for server in self.memcached:
            if server.process is not None:
                server.thaw()
            server.stop()
        self.state_proxy.kill()
        admin = sa.create_engine(postgres_base_url())
        with admin.begin() as conn:
            conn.execute(sa.text(f'drop schema if exists "{self.schema}" cascade'))
        admin.dispose()


@dataclass
class Phase:
    name: str
    description: str
    actions: list[tuple[float, str, Callable[[Region], None]]] = field(default_factory=list)


def _kill_memcached(region: Region, which: slice) -> None:
    for server in region.memcached[which]:
        server.stop()  # SIGKILL: a frozen one too


def _start_memcached(region: Region, which: slice) -> None:
    for server in region.memcached[which]:
        if server.process is None:
            server.start()


def _freeze_memcached(region: Region) -> None:
    for server in region.memcached:
        server.freeze()


def _thaw_memcached(region: Region) -> None:
    for server in region.memcached:
        server.thaw()


def _kill_a_worker(region: Region) -> None:
    workers = region.worker_pids()
    if workers:
        os.kill(random.choice(workers), signal.SIGKILL)


def phases(seconds: float) -> list[Phase]:
    lift = max(FAULT_AT + 1, seconds - 3)
    everything, second = slice(None), slice(1, 2)
    slow: dict[str, SlowClients] = {}

    def open_slow(region: Region) -> None:
        slow["clients"] = SlowClients(region.port, header=8, body=8, interval=0.5).__enter__()

    def close_slow(region: Region) -> None:
        slow.pop("clients").__exit__(None, None, None)

    return [
        Phase("baseline", "no fault"),
        Phase("memcached_kill9", "every memcached server killed -9, restarted empty 3 s later", [
            (FAULT_AT, "kill -9 all", lambda r: _kill_memcached(r, everything)),
            (FAULT_AT + 3, "restart all (empty)", lambda r: _start_memcached(r, everything))]),
        Phase("memcached_sigstop", "every memcached server frozen (SIGSTOP) until 3 s before the end", [
            (FAULT_AT, "SIGSTOP all", _freeze_memcached),
            (lift, "SIGCONT all", _thaw_memcached)]),
        Phase("one_of_three_killed", "one of the three memcached servers killed -9, restarted empty 3 s before the end", [
            (FAULT_AT, "kill -9 one", lambda r: _kill_memcached(r, second)),
            (lift, "restart it (empty)", lambda r: _start_memcached(r, second))]),
        Phase("state_hung", "the state store frozen (SIGSTOP of the proxy in front of Postgres) and one memcached "
                            "server flushed, so a third of lookups need the state", [
            (FAULT_AT, "SIGSTOP the state proxy; flush one server", lambda r: (r.state_proxy.freeze(), r.memcached[0].flush())),
            (lift, "SIGCONT the state proxy", lambda r: r.state_proxy.thaw())]),
        Phase("state_refusing", "the state store refusing connections (its proxy killed) and one memcached "
                                "server flushed", [
            (FAULT_AT, "kill the state proxy; flush one server", lambda r: (r.state_proxy.kill(), r.memcached[0].flush())),
            (lift, "restart the state proxy", lambda r: r.state_proxy.start())]),
        Phase("worker_killed", "a gunicorn worker killed -9 every 2 s", [
            (at, "kill -9 a worker", _kill_a_worker) for at in range(int(FAULT_AT), int(seconds), 2)]),
        Phase("slow_clients", "16 slow clients (8 dribbling headers, 8 unfinished bodies) for the whole phase", [
            (0.0, "open 16 slow clients", open_slow),
            (seconds - 0.5, "close them", close_slow)]),
    ]


def run_phase(region: Region, phase: Phase, *, seconds: float, connections: int, log) -> dict[str, Any]:
    before = region.metrics()
    path = f"/v1/collections/{COLLECTION}/records/user_id/{{id}}"
    command = [shutil.which("wrk") or "wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s",
               "-s", str(LUA), region.base_url, "--", str(region.ids), path, f"Bearer {region.secret}"]
    load = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    started = time.monotonic()
    done_actions = []
    snapshots = []  # (seconds into the phase, metrics) at each action: the fault's own window
    for at, label, action in phase.actions:
        time.sleep(max(0.0, started + at - time.monotonic()))
        action(region)
        done_actions.append(f"{time.monotonic() - started:.1f} s: {label}")
        snapshots.append((time.monotonic(), _metrics_or_none(region)))
    stdout, stderr = load.communicate(timeout=seconds + 120)
    line = next((l for l in stdout.splitlines() if l.startswith(MARKER)), None)
    if line is None:
        raise RuntimeError(f"wrk failed in phase {phase.name}: {stderr.strip() or stdout[-1000:]}")
    raw = json.loads(line[len(MARKER):])
    recovery = region.wait_recovered(log)
    after = region.metrics()
    statuses = {int(k): v for k, v in raw["statuses"].items()}
    duration = raw["duration_us"] / 1e6
    result = {
        "phase": phase.name,
        "fault": phase.description,
        "timeline": done_actions,
        "seconds": round(duration, 1),
        "requests": raw["requests"],
        "requests_per_second": round(raw["requests"] / duration),
        "ok_2xx": sum(v for k, v in statuses.items() if 200 <= k < 300),
        "non_2xx": {str(k): v for k, v in sorted(statuses.items()) if not 200 <= k < 300},
        "false_404": statuses.get(404, 0),
        "socket_errors": {name: raw[name] for name in ("connect_errors", "read_errors", "write_errors", "timeouts")
                          if raw[name]},
        "p50_ms": round(raw["p50_us"] / 1000, 1),
        "p99_ms": round(raw["p99_us"] / 1000, 1),
        "worst_ms": round(raw["max_us"] / 1000, 1),
        "state_reads_per_second": round((after["state_fallbacks"] - before["state_fallbacks"]) / duration),
        "state_reads_per_second_during_fault": _rate_between(snapshots, "state_fallbacks"),
        "recovery_seconds": round(recovery, 1),
    }
    log(_line(result))
    return result


def _metrics_or_none(region: Region) -> dict[str, float] | None:
    try:
        return region.metrics(timeout=1)  # never holds up the phase's next action for long
    except requests.RequestException:
        return None


def _rate_between(snapshots: list[tuple[float, dict[str, float] | None]], name: str) -> int | None:
    """Per second between the first and the last action of a phase (while its fault lasted)."""
    usable = [(at, m) for at, m in snapshots if m is not None]
    if len(usable) < 2 or usable[-1][0] - usable[0][0] < 1:
        return None
    (start, first), (end, last) = usable[0], usable[-1]
    return round((last[name] - first[name]) / (end - start))


def _line(r: dict[str, Any]) -> str:
    non_2xx = ", ".join(f"{status}: {count}" for status, count in r["non_2xx"].items()) or "none"
    errors = ", ".join(f"{k} {v}" for k, v in r["socket_errors"].items()) or "none"
    return (f"chaos: {r['phase']:<20} {r['requests']:>7,} requests ({r['requests_per_second']:,}/s) · non-2xx {non_2xx}"
            f" · false 404s {r['false_404']} · socket errors {errors} · p50/p99/worst {r['p50_ms']}/{r['p99_ms']}/"
            f"{r['worst_ms']} ms · state reads {r['state_reads_per_second']:,}/s"
            + (f" ({r['state_reads_per_second_during_fault']:,}/s during the fault)"
               if r["state_reads_per_second_during_fault"] is not None else "")
            + f" · recovered in {r['recovery_seconds']} s")


def _children(pid: int) -> list[int]:
    pids: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        pids += [int(child) for child in (task / "children").read_text().split()]
    return pids


def run_chaos(*, seconds: float, records: int, record_bytes: int, connections: int, workers: int,
              only: list[str] | None, log=print) -> dict[str, Any]:
    chosen = [p for p in phases(seconds) if not only or p.name in only]
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="larder-chaos-") as tmp:
        region = Region(Path(tmp), records, record_bytes, workers)
        try:
            region.start(log)
            results = [run_phase(region, phase, seconds=seconds, connections=connections, log=log) for phase in chosen]
        finally:
            region.stop()
    return {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "commit": _commit(),
        "machine": {"cpus": os.cpu_count(), "load_average_at_end": [round(x, 2) for x in os.getloadavg()]},
        "setup": {"records": records, "record_bytes": record_bytes, "memcached_servers": 3, "workers": workers,
                  "wrk_connections": connections, "seconds_per_phase": seconds, "state": "Postgres via a TCP proxy",
                  "serving": "larder serve: nginx → gunicorn sync workers"},
        "phases": results,
        "seconds": round(time.monotonic() - started, 1),
    }


def _commit() -> str:
    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True)
    return done.stdout.strip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.chaos", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=10, help="load per phase (default 10)")
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--record-bytes", type=int, default=500)
    parser.add_argument("--connections", type=int, default=16, help="wrk connections (default 16)")
    parser.add_argument("--workers", type=int, default=3, help="gunicorn workers (default 3)")
    parser.add_argument("--only", action="append", help="run only this phase (repeatable)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    known = {p.name for p in phases(args.seconds)}
    unknown = set(args.only or ()) - known
    if unknown:
        parser.error(f"unknown phase(s) {', '.join(sorted(unknown))}; phases: {', '.join(sorted(known))}")
    results = run_chaos(seconds=args.seconds, records=args.records, record_bytes=args.record_bytes,
                        connections=args.connections, workers=args.workers, only=args.only)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"chaos: {len(results['phases'])} phases in {results['seconds']} s; results in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
