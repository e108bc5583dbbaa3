"""wrk with random keys: one run's throughput, latency percentiles and errors."""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path

SCRIPT = Path(__file__).with_name("random_keys.lua")
MARKER = "BENCH_JSON "


@dataclass
class LoadResult:
    requests: int
    requests_per_second: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    errors: int  # connect, read, write errors and timeouts
    non_2xx: int

    def as_dict(self) -> dict:
        return asdict(self)


def warm_up(base_url: str, path_template: str, ids_file: Path, *, authorization: str = "", attempts: int = 15) -> None:
    """Load until every gunicorn worker has loaded the app (they load it lazily, after forking):
    a run whose slowest request is fast had no worker still importing."""
    for _ in range(attempts):
        result = run_wrk(base_url, path_template, ids_file, connections=8, seconds=1, authorization=authorization)
        if result.requests and result.max_ms < 250:
            return
    raise RuntimeError(f"{base_url} is still slow after {attempts} warm-up runs (max {result.max_ms:.0f} ms)")


def run_wrk(base_url: str, path_template: str, ids_file: Path, *, connections: int, seconds: float,
            authorization: str = "", threads: int = 2) -> LoadResult:
    """Load `base_url` for `seconds` with `connections` open connections; each request's path is
    `path_template` with every "{id}" replaced by a random line of `ids_file`."""
    wrk = shutil.which("wrk")
    if wrk is None:
        raise RuntimeError("wrk is not installed: `apt-get install -y wrk`")
    command = [
        wrk, f"-t{min(threads, connections)}", f"-c{connections}", f"-d{seconds}s", "--timeout", "5s",
        "-s", str(SCRIPT), base_url, "--", str(ids_file), path_template, authorization,
    ]
    finished = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60)
    line = next((l for l in finished.stdout.splitlines() if l.startswith(MARKER)), None)
    if finished.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({finished.returncode}): {finished.stderr.strip() or finished.stdout[-1000:]}")
    raw = json.loads(line[len(MARKER):])
    seconds_run = raw["duration_us"] / 1e6
    return LoadResult(
        requests=raw["requests"],
        requests_per_second=raw["requests"] / seconds_run,
        p50_ms=raw["p50_us"] / 1000,
        p90_ms=raw["p90_us"] / 1000,
        p99_ms=raw["p99_us"] / 1000,
        max_ms=raw["max_us"] / 1000,
        errors=raw["connect_errors"] + raw["read_errors"] + raw["write_errors"] + raw["timeouts"],
        non_2xx=raw["non_2xx"],
    )
