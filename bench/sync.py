"""Sync benchmark: `larder sync` of a generated 10-column model with a nested STRUCT, in DuckDB.

For each variant (without and with one Liquid field): a full sync, a no-change resync and a
resync after 1 % of the rows changed. Each sync is its own `larder sync` subprocess, so its peak
RSS is its own (wait4), and its seconds are the engine's (the CLI's "succeeded in" figure, which
leaves out interpreter start-up; wall seconds are kept too). A full sync at a quarter of the size
shows whether memory grows with the row count.

A large first sync is read, mapped and written by worker processes, each its own share
(defaults.write_workers), and a full resync may map in workers (defaults.sync_workers): the peak
RSS reported is that of the largest process of the sync's tree (wait4's) and, beside it, the
largest sums of the RSS and of the PSS of the whole tree, sampled every 0.1 s from /proc while it
runs. The RSS sum counts the pages processes share (the libraries, what the fork server loaded) once
in each; the PSS divides them among their sharers: what the tree holds, which the memory target
is judged on (or the largest process, if larger).

The Postgres section generates the same model (same records) into a Postgres schema and runs the
same three steps of the plain variant, beside a full sync of the DuckDB model of the same size in
the same run, for the ratio (the sync section's, when it measured that size).
"""

from __future__ import annotations

import re
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import data
from bench.processes import postgres_available, postgres_base_url
from bench.services import BenchProject, ProcessRun, bench_memcached

TARGET_ROWS = 1_000_000
SUCCEEDED = re.compile(r"succeeded in ([\d.]+)s: (.*)")


@dataclass(frozen=True)
class SyncSizes:
    rows: int
    record_bytes: int


# The target size itself fits `make bench`'s 10-minute bound (about a minute and a half for the
# section); a smaller `--sync-rows` is extrapolated to 1M, labelled so.
FULL = SyncSizes(rows=TARGET_ROWS, record_bytes=400)
QUICK = SyncSizes(rows=5_000, record_bytes=400)

VARIANTS = {"plain": False, "liquid": True}  # variant name → has one Liquid field

# The Postgres section fits `make bench`'s bound at the target size itself.
POSTGRES_FULL = SyncSizes(rows=1_000_000, record_bytes=400)
POSTGRES_QUICK = SyncSizes(rows=5_000, record_bytes=400)
STEPS = ("full", "no change", "1% changed")


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
            "peak_tree_rss_mb_small": small["peak_tree_rss_mb"],
            "peak_tree_pss_mb_small": small["peak_tree_pss_mb"],
            "rows_large": sizes.rows,
            "peak_rss_mb_large": large["peak_rss_mb"],
            "peak_tree_rss_mb_large": large["peak_tree_rss_mb"],
            "peak_tree_pss_mb_large": large["peak_tree_pss_mb"],
            "growth": round(large["peak_rss_mb"] / small["peak_rss_mb"], 2),  # of the largest process
            "tree_pss_growth": round(large["peak_tree_pss_mb"] / max(small["peak_tree_pss_mb"], 1), 2),
        },
    }
    if sizes.rows < TARGET_ROWS:
        result["extrapolated_to_1m"] = {
            f"{r['variant']} {r['step']}": round(r["seconds"] * TARGET_ROWS / sizes.rows, 1) for r in runs
        }
    return result


def run_postgres_sync_bench(sizes: SyncSizes, *, log=print, duckdb_runs: Sequence[dict[str, Any]] = ()) -> dict[str, Any]:
    """Full, no-change and 1 % changed syncs of the model in Postgres, and a full sync of the same
    model in DuckDB, all at `sizes.rows`: the sync section's (`duckdb_runs`) when it measured that
    size in this run, else one of its own."""
    if not postgres_available():
        return {"skipped": "Postgres is not reachable at 127.0.0.1:5432"}
    measured = [r for r in duckdb_runs if (r["variant"], r["step"], r["rows"]) == ("plain", "full", sizes.rows)]
    if measured:
        duckdb_full = {**measured[0], "variant": "duckdb"}
        log(f"sync: duckdb   full       {sizes.rows:>9,} rows: the sync section's, {duckdb_full['seconds']:.1f} s")
    else:
        duckdb_full = _variant_runs("duckdb", False, sizes.rows, sizes, steps=("full",), log=log)[0]
    with _postgres_schema() as url:
        runs = _variant_runs("postgres", False, sizes.rows, sizes, steps=STEPS, log=log, warehouse_url=url)
    full = next(r for r in runs if r["step"] == "full")
    return {
        "rows": sizes.rows,
        "record_bytes": sizes.record_bytes,
        "columns": len(data.COLUMNS),
        "runs": [duckdb_full, *runs],
        "full_vs_duckdb": round(full["seconds"] / max(duckdb_full["seconds"], 0.05), 2),
    }


@contextmanager
def _postgres_schema() -> Iterator[str]:
    """A fresh Postgres schema for the model, dropped afterwards; yields the warehouse URL."""
    import sqlalchemy as sa

    schema = f"larder_bench_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(postgres_base_url())
    with admin.begin() as conn:
        conn.exec_driver_sql(f'create schema "{schema}"')
    try:
        yield f"{postgres_base_url()}?options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.exec_driver_sql(f'drop schema "{schema}" cascade')
        admin.dispose()


def _variant_runs(variant: str, liquid: bool, rows: int, sizes: SyncSizes, *, steps: tuple[str, ...], log,
                  warehouse_url: str | None = None) -> list[dict]:
    name = f"bench_{variant}"
    memory_mb = max(256, rows * (sizes.record_bytes + 200) * 2 * 2 // 1_000_000)  # two keys per record
    with tempfile.TemporaryDirectory(prefix="larder-bench-sync-") as tmp, bench_memcached(memory_mb=memory_mb) as memcached:
        project = BenchProject(Path(tmp), memcached.server, warehouse_url=warehouse_url)
        if warehouse_url:
            data.create_users_postgres(warehouse_url, rows, record_bytes=sizes.record_bytes)
        else:
            data.create_users(project.warehouse_path, rows, record_bytes=sizes.record_bytes)
        project.write([data.sync_spec(name, liquid=liquid)])
        results = []
        for step in steps:
            if step == "1% changed":
                if warehouse_url:
                    data.change_one_percent_postgres(warehouse_url)
                else:
                    data.change_one_percent(project.warehouse_path)
            run = project.larder("sync", name, timeout=1800).check(f"larder sync {name}")
            results.append(_result(variant, step, rows, run))
            last = results[-1]
            log(f"sync: {variant:8} {step:10} {rows:>9,} rows: {last['seconds']:6.1f} s "
                f"({last['rows_per_second']:,.0f} rows/s), peak RSS {last['peak_rss_mb']:.0f} MB "
                f"(process tree {last['peak_tree_rss_mb']:.0f} MB, PSS {last['peak_tree_pss_mb']:.0f} MB), "
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
        "peak_tree_rss_mb": round(run.max_tree_rss_mb, 1),
        "peak_tree_pss_mb": round(run.max_tree_pss_mb, 1),
        "counts": counts,
    }
