"""Sync throughput: a full sync, a no-change resync and a full resync of a 100,000-row DuckDB model.

    .venv/bin/python -m bench.sync_100k [--rows 100000] [--chunk-size 10000]

The model has 11 columns (a STRUCT with a LIST inside among them), one extra index and one
Liquid field. It starts its own memcached, writes state to SQLite, and prints rows/s per run
and the process's peak RSS after each run (flat memory shows as a peak that does not grow with
--rows beyond the per-key snapshot).
"""

from __future__ import annotations

import argparse
import resource
import shutil
import tempfile
import time
from pathlib import Path

import duckdb
import yaml

from bench.processes import MemcachedProcess
from orchestration.config.load import load_project
from orchestration.sync import Services, run_sync

SYNC = {
    "name": "bench_profiles",
    "model": {"sql": "select * from profiles"},
    "collection": "profiles",
    "primary_index": "user_id",
    "indices": ["email"],
    "fields": [
        {"column": "user_id"},
        {"column": "email"},
        {"column": "full_name"},
        {"to": "first_name", "liquid": "{{ full_name | split: ' ' | first }}"},
        {"column": "city", "to": "address.city"},
        {"column": "country", "to": "address.country"},
        {"column": "plan"},
        {"column": "lifetime_value"},
        {"column": "churn_risk"},
        {"column": "joined_on"},
        {"column": "last_seen_at"},
        {"column": "summary_90d", "to": "90_day_summary"},
    ],
    "delete": "delete",
}


def make_model(path: Path, rows: int) -> None:
    conn = duckdb.connect(str(path))
    conn.execute(f"""
        create or replace table profiles as select
            i as user_id,
            'user' || i || '@example.com' as email,
            'First' || (i % 997) || ' Last' || (i % 1009) as full_name,
            'City ' || (i % 300) as city,
            ['US', 'GB', 'DE', 'FR'][1 + i % 4] as country,
            ['free', 'premium', 'family'][1 + i % 3] as plan,
            (i % 100000)::decimal(10, 2) / 7 as lifetime_value,
            (i % 100) / 100.0 as churn_risk,
            date '2020-01-01' + (i % 1000)::integer as joined_on,
            timestamp '2023-01-01 00:00:00' + to_seconds(i) as last_seen_at,
            {{'num_songs_listened': i % 500, 'top_genres': ['house', 'techno', 'ambient'],
              'top_artists': ['artist ' || (i % 50), 'artist ' || (i % 51)]}} as summary_90d
        from range({rows}) as t(i)
    """)
    conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--chunk-size", type=int, default=10_000)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="larder-bench-"))
    memcached = MemcachedProcess(memory_mb=1024, item_size=None)
    memcached.start()
    server = memcached.server
    try:
        make_model(root / "warehouse.duckdb", args.rows)
        (root / "syncs").mkdir()
        (root / "syncs" / "bench.yaml").write_text(yaml.safe_dump(SYNC, sort_keys=False))
        (root / "larder.yaml").write_text(yaml.safe_dump({
            "warehouse": {"url": f"duckdb:///{root / 'warehouse.duckdb'}"},
            "state": {"url": f"sqlite:///{root / 'state.db'}"},
            "regions": {"bench": {"servers": [server]}},
            "defaults": {"chunk_size": args.chunk_size},
        }))
        project = load_project(root / "larder.yaml")
        print(f"{args.rows} rows, chunk size {args.chunk_size}")
        for label, full_resync in (("full sync (all added)", False), ("no-change resync", False),
                                   ("full resync (all rewritten)", True)):
            services = Services(project)
            started = time.perf_counter()
            report = run_sync(services, SYNC["name"], full_resync=full_resync)
            seconds = time.perf_counter() - started
            services.close()
            peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            print(f"  {label:30s} {seconds:6.2f} s  {args.rows / seconds:9,.0f} rows/s  "
                  f"written {report.counts['written']:>7}  peak RSS {peak_mb:,.0f} MB")
    finally:
        memcached.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
