"""Sync benchmark: `larder sync` of a generated 10-column model with a nested STRUCT, in DuckDB.

For each variant (without and with one Liquid field): a full sync, a no-change resync and a
resync after 1 % of the rows changed. Each sync is its own `larder sync` subprocess, so its peak
RSS is its own (wait4), and its seconds are the engine's (the CLI's "succeeded in" figure, which
leaves out interpreter start-up; wall seconds are kept too). A full sync at a quarter of the size
shows whether memory grows with the row count.
"""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import data
from bench.services import BenchProject, Memcached, ProcessRun

TARGET_ROWS = 1_000_000
SUCCEEDED = re.compile(r"succeeded in ([\d.]+)s: (.*)")


@dataclass(frozen=True)
class SyncSizes:
    rows: int
    record_bytes: int


# 1M rows does not fit `make bench`'s 10-minute bound yet (see README, Performance): the default size
# is measured and extrapolated to 1M, labelled so; `--sync-rows 1000000` measures the real thing.
FULL = SyncSizes(rows=100_000, record_bytes=400)
QUICK = SyncSizes(rows=5_000, record_bytes=400)

VARIANTS = {"plain": False, "liquid": True}  # variant name → has one Liquid field


def run_sync_bench(sizes: SyncSizes, *, log=print) -> dict[str, Any]:
    """Every sync step of every variant at `sizes.rows`, then a full sync at a quarter of it."""
    runs = []
    for variant, liquid in VARIANTS.items():
        runs += _variant_runs(variant, liquid, sizes.rows, sizes, steps=("full", "no change", "1% changed"), log=log)
    quarter = max(1, sizes.rows // 4)
    small = _variant_runs("plain", False, quarter, sizes, steps=("full",), log=log)[0]
    large = next(r for r in runs if r["variant"] == "plain" and r["step"] == "full")
    result: dict[str, Any] = {
        "rows": sizes.rows,
        "record_bytes": sizes.record_bytes,
        "columns": len(data.COLUMNS),
        "runs": runs,
        "rss_flatness": {
            "rows_small": quarter,
            "peak_rss_mb_small": small["peak_rss_mb"],
            "rows_large": sizes.rows,
            "peak_rss_mb_large": large["peak_rss_mb"],
            "growth": round(large["peak_rss_mb"] / small["peak_rss_mb"], 2),
        },
    }
    if sizes.rows < TARGET_ROWS:
        result["extrapolated_to_1m"] = {
            f"{r['variant']} {r['step']}": round(r["seconds"] * TARGET_ROWS / sizes.rows, 1) for r in runs
        }
    return result


def _variant_runs(variant: str, liquid: bool, rows: int, sizes: SyncSizes, *, steps: tuple[str, ...], log) -> list[dict]:
    name = f"bench_{variant}"
    memory_mb = max(256, rows * (sizes.record_bytes + 200) * 2 * 2 // 1_000_000)  # two keys per record
    with tempfile.TemporaryDirectory(prefix="larder-bench-sync-") as tmp, Memcached(memory_mb=memory_mb) as memcached:
        project = BenchProject(Path(tmp), memcached.server)
        data.create_users(project.warehouse_path, rows, record_bytes=sizes.record_bytes)
        project.write([data.sync_spec(name, liquid=liquid)])
        results = []
        for step in steps:
            if step == "1% changed":
                data.change_one_percent(project.warehouse_path)
            run = project.larder("sync", name, timeout=1800).check(f"larder sync {name}")
            results.append(_result(variant, step, rows, run))
            last = results[-1]
            log(f"sync: {variant:6} {step:10} {rows:>9,} rows: {last['seconds']:6.1f} s "
                f"({last['rows_per_second']:,.0f} rows/s), peak RSS {last['peak_rss_mb']:.0f} MB, "
                f"written {last['counts'].get('written', 0):,}")
    return results


def _result(variant: str, step: str, rows: int, run: ProcessRun) -> dict[str, Any]:
    match = SUCCEEDED.search(run.stdout)
    if match is None:
        raise RuntimeError(f"cannot read the sync's report from: {run.stdout!r}")
    seconds = float(match.group(1))
    counts = {name: int(value) for name, value in (part.rsplit(" ", 1) for part in match.group(2).split(", "))}
    return {
        "variant": variant,
        "step": step,
        "rows": rows,
        "seconds": seconds,
        "wall_seconds": round(run.wall_seconds, 2),
        "rows_per_second": round(rows / max(seconds, 0.05)),
        "peak_rss_mb": round(run.max_rss_mb, 1),
        "counts": counts,
    }
