"""Serving benchmark: Larder's lookups against a bare Falcon + pymemcache route, in alternation.

Both apps are served the same way: behind the same nginx proxy (serving/launcher.py, as
`larder serve` does), under the same gunicorn settings (serving/gunicorn.conf.py, same worker count
and HTTP parser); they read the same memcached filled by the real sync engine and get the same wrk
load (random keys). Scenarios alternate larder, bare, larder, bare… and the median of each figure is
reported with the ratio Larder / bare.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from bench import data
from bench.loadgen import LoadResult, run_wrk, warm_up
from bench.services import REGION, BenchProject, HttpServer, bench_memcached, gunicorn_settings, http_parser
from orchestration.machine import free_port

SYNC_NAME = "bench_serving"
COLLECTION = data.sync_spec(SYNC_NAME)["collection"]
BATCH_SIZE = 10


@dataclass(frozen=True)
class ServingSizes:
    records: int
    record_bytes: int
    seconds: float
    rounds: int  # larder/bare alternations per scenario
    connections: tuple[int, ...]
    extra_connections: int  # for the secondary-index and batch scenarios
    extra_rounds: int


FULL = ServingSizes(records=100_000, record_bytes=1_000, seconds=10, rounds=3, connections=(8, 64),
                    extra_connections=64, extra_rounds=2)
QUICK = ServingSizes(records=2_000, record_bytes=1_000, seconds=1, rounds=1, connections=(8, 64),
                     extra_connections=64, extra_rounds=1)


@dataclass(frozen=True)
class Scenario:
    name: str
    path_template: str  # "{id}" is replaced by a random id from `ids`
    ids: str  # "user_id" or "email"
    connections: int
    rounds: int


def run_serving(sizes: ServingSizes, *, workers: int | None = None, log=print) -> dict[str, Any]:
    """Fill a memcached through `larder sync`, serve it with Larder and with the bare app, load both."""
    workers = workers or gunicorn_settings()["workers"]  # serving/gunicorn.conf.py's choice, for both apps
    parser = http_parser()
    with tempfile.TemporaryDirectory(prefix="larder-bench-serving-") as tmp, \
            bench_memcached(memory_mb=max(256, sizes.records * sizes.record_bytes * 3 // 1_000_000)) as memcached:
        root = Path(tmp)
        project = BenchProject(root, memcached.server)
        log(f"serving: generating {sizes.records:,} records of ~{sizes.record_bytes} bytes and syncing them")
        data.create_users(project.warehouse_path, sizes.records, record_bytes=sizes.record_bytes)
        project.write([data.sync_spec(SYNC_NAME)])
        load = project.larder("sync", SYNC_NAME, timeout=900).check("larder sync")
        secret = project.create_api_key()
        ids = _write_ids(root, sizes.records)

        gunicorn_args = {"GUNICORN_CMD_ARGS": f"--http-parser {parser}"}
        larder_port, bare_port = free_port(), free_port()
        larder = HttpServer(
            "larder", project.larder_command("serve", "--region", REGION, "--bind", f"127.0.0.1:{larder_port}",
                                             "--workers", str(workers)),
            env=project.env(**gunicorn_args), port=larder_port, log_path=root / "larder.log")
        bare = HttpServer(
            "bare", [sys.executable, "-m", "serving.launcher", "--name", "bare",
                     "--bind", f"127.0.0.1:{bare_port}", "--workers", str(workers), "bench.bare_app:get_app()"],
            env=project.env(BENCH_MEMCACHED=memcached.server, **gunicorn_args), port=bare_port,
            log_path=root / "bare.log")
        with larder, bare:
            _wait_for_sentinel(memcached.server)  # `larder serve` rehydrates a region it finds without one
            auth = f"Bearer {secret}"
            _check_same_answer(larder.base_url, bare.base_url, auth)
            batch_route = discover_batch_route(larder.base_url)
            scenarios = _scenarios(sizes, batch_route)
            skipped = {} if batch_route else {"batch": "no batch route in /openapi.json"}
            for name, reason in skipped.items():
                log(f"serving: {name} skipped: {reason}")
            for server in (larder, bare):
                warm_up(server.base_url, scenarios[0].path_template, ids["user_id"], authorization=auth)
            results = [_run_scenario(s, larder, bare, ids, auth, sizes.seconds, log) for s in scenarios]
    return {
        "records": sizes.records,
        "record_bytes": sizes.record_bytes,
        "loaded_by": "larder sync (the real engine, CLI subprocess)",
        "load_seconds": round(load.wall_seconds, 1),
        "gunicorn": {"workers": workers, "http_parser": parser, **gunicorn_settings()},
        "proxy": "nginx (serving/nginx.conf.template), for both apps",
        "seconds_per_run": sizes.seconds,
        "scenarios": results,
        "skipped": skipped,
    }


def _wait_for_sentinel(server: str, timeout: float = 300) -> None:
    """Until the API's cache watcher has rehydrated the region (a synced region has no sentinel
    yet), so that rewrite does not share the CPU with the measurements."""
    import time

    from orchestration.store.cache import RecordCache

    cache = RecordCache([server])
    try:
        deadline = time.monotonic() + timeout
        while cache.servers_missing_sentinel():
            if time.monotonic() > deadline:
                raise RuntimeError("the region was not rehydrated by `larder serve` within 5 minutes")
            time.sleep(0.5)
    finally:
        cache.close()


def discover_batch_route(base_url: str) -> str | None:
    """The batch lookup's path template from the API's /openapi.json (a records path with `values`)."""
    try:
        document = requests.get(f"{base_url}/openapi.json", timeout=5).json()
    except (requests.RequestException, ValueError):
        return None
    for path, operations in document.get("paths", {}).items():
        get = operations.get("get", {}) if isinstance(operations, dict) else {}
        names = {p.get("name") for p in get.get("parameters", []) + operations.get("parameters", [])
                 if isinstance(p, dict)}
        if "/records/" in path and "values" in names:
            return path
    return None


def _scenarios(sizes: ServingSizes, batch_route: str | None) -> list[Scenario]:
    by_id = f"/v1/collections/{COLLECTION}/records/user_id/{{id}}"
    scenarios = [Scenario("lookup by user_id", by_id, "user_id", c, sizes.rounds) for c in sizes.connections]
    scenarios.append(Scenario("lookup by email (secondary index)", f"/v1/collections/{COLLECTION}/records/email/{{id}}",
                              "email", sizes.extra_connections, sizes.extra_rounds))
    if batch_route:
        path = batch_route.replace("{collection}", COLLECTION).replace("{index_key}", "user_id")
        query = "&".join(["values={id}"] * BATCH_SIZE)
        scenarios.append(Scenario(f"batch of {BATCH_SIZE} by user_id", f"{path}?{query}", "user_id",
                                  sizes.extra_connections, sizes.extra_rounds))
    return scenarios


def _run_scenario(scenario: Scenario, larder: HttpServer, bare: HttpServer, ids: dict[str, Path], auth: str,
                  seconds: float, log) -> dict[str, Any]:
    runs: dict[str, list[LoadResult]] = {"larder": [], "bare": []}
    for _ in range(scenario.rounds):
        for server in (larder, bare):
            result = run_wrk(server.base_url, scenario.path_template, ids[scenario.ids],
                             connections=scenario.connections, seconds=seconds, authorization=auth)
            if result.non_2xx or result.errors:
                log(f"serving: WARNING {server.name} {scenario.name}: {result.non_2xx} non-2xx, {result.errors} errors")
            runs[server.name].append(result)
    larder_median, bare_median = _median(runs["larder"]), _median(runs["bare"])
    ratio = larder_median["requests_per_second"] / bare_median["requests_per_second"]
    log(f"serving: {scenario.name} @{scenario.connections}: larder {larder_median['requests_per_second']:,.0f} req/s "
        f"p99 {larder_median['p99_ms']:.1f} ms · bare {bare_median['requests_per_second']:,.0f} req/s "
        f"p99 {bare_median['p99_ms']:.1f} ms · ratio {ratio:.2f}")
    return {
        "name": scenario.name,
        "connections": scenario.connections,
        "larder": larder_median,
        "bare": bare_median,
        "ratio_rps": round(ratio, 3),
        "runs": {name: [r.as_dict() for r in results] for name, results in runs.items()},
    }


def _median(results: list[LoadResult]) -> dict[str, float]:
    figures = ("requests_per_second", "p50_ms", "p90_ms", "p99_ms", "max_ms")
    summary = {name: round(statistics.median(getattr(r, name) for r in results), 3) for name in figures}
    summary["non_2xx"] = sum(r.non_2xx for r in results)
    summary["errors"] = sum(r.errors for r in results)
    return summary


def _write_ids(root: Path, records: int) -> dict[str, Path]:
    paths = {"user_id": root / "user_ids.txt", "email": root / "emails.txt"}
    paths["user_id"].write_text("".join(f"{i}\n" for i in range(records)))
    paths["email"].write_text("".join(f"user{i}@example.com\n" for i in range(records)))
    return paths


def _check_same_answer(larder_url: str, bare_url: str, auth: str) -> None:
    """Both apps must answer the same record (else the comparison means nothing)."""
    path = f"/v1/collections/{COLLECTION}/records/user_id/1"
    served = requests.get(larder_url + path, headers={"Authorization": auth}, timeout=5)
    bare = requests.get(bare_url + path, timeout=5)
    if served.status_code != 200 or bare.status_code != 200:
        raise RuntimeError(f"lookup check failed: larder {served.status_code} {served.text[:200]}, bare {bare.status_code}")
    if json.loads(served.content) != json.loads(bare.content):
        raise RuntimeError("larder and the bare app answer different records for the same key")
