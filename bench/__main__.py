"""`python -m bench` (= `make bench`): serving, sync and freshness benchmarks, table + JSON + PNG.

    python -m bench                          everything, bounded (about 8 minutes on 2 cores)
    python -m bench --quick                  small sizes (seconds), for smoke tests and iteration
    python -m bench --only serving|sync|postgres|freshness
    python -m bench --sync-rows 1000000      the sync benchmark's size (default: what fits the bound)
    python -m bench --postgres-rows 100000   the Postgres sync section's size (default: 1,000,000)
    python -m bench profile sync|serving     py-spy profiles into bench/results/profile-*.txt
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from bench import report, serving, sync
from bench.freshness_runner import run_freshness

PARTS = ("serving", "sync", "postgres", "freshness")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["profile"]:
        from bench import profiles

        return profiles.main(argv[1:])
    args = _parser().parse_args(argv)
    results = run(args.only or PARTS, quick=args.quick, sync_rows=args.sync_rows, workers=args.workers,
                  postgres_rows=args.postgres_rows)
    report.print_tables(results)
    latest = report.write_results(results, args.out)
    print(f"\nwrote {latest} and {latest.with_suffix('.png')} ({results['seconds']:.0f} s in all)")
    return 0


def run(parts, *, quick: bool, sync_rows: int | None = None, workers: int | None = None,
        postgres_rows: int | None = None, log=print) -> dict:
    """Run the chosen benchmarks; returns everything that goes into the JSON (targets included)."""
    started = time.monotonic()
    results: dict = {
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "quick": quick,
        "machine": report.machine(),
        "note": "2-core machine shared with other work while measuring: figures are noisy; ratios are taken in one run",
    }
    if "serving" in parts:
        results["serving"] = serving.run_serving(serving.QUICK if quick else serving.FULL, workers=workers, log=log)
    if "sync" in parts:
        sizes = sync.QUICK if quick else sync.FULL
        results["sync"] = sync.run_sync_bench(replace(sizes, rows=sync_rows) if sync_rows else sizes, log=log)
    if "postgres" in parts:
        sizes = sync.POSTGRES_QUICK if quick else sync.POSTGRES_FULL
        results["postgres_sync"] = sync.run_postgres_sync_bench(
            replace(sizes, rows=postgres_rows) if postgres_rows else sizes, log=log,
            duckdb_runs=results.get("sync", {}).get("runs", []))
    if "freshness" in parts:
        if quick and len(parts) > 1:
            log("freshness: skipped with --quick (run --only freshness)")
        else:
            results["freshness"] = run_freshness(log=log)
    results["targets"] = report.targets(results)
    results["seconds"] = round(time.monotonic() - started, 1)
    return results


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", action="append", choices=PARTS, help="run only this part (repeatable)")
    parser.add_argument("--quick", action="store_true", help="small sizes: seconds, not minutes")
    parser.add_argument("--sync-rows", type=int, help="rows of the sync benchmark's model")
    parser.add_argument("--postgres-rows", type=int, help="rows of the Postgres sync section's model")
    parser.add_argument("--workers", type=int, help="gunicorn workers for both apps (default: serving/gunicorn.conf.py's)")
    parser.add_argument("--out", type=Path, default=report.RESULTS_DIR, help="where results go (default: bench/results)")
    return parser


if __name__ == "__main__":
    sys.exit(main())
