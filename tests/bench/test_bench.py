"""Smoke test of the benchmark harness: its tiny variants run end to end and report every figure.

Speed is never asserted here (the figures are whatever this machine gives); what is checked is
that each benchmark runs against the real processes and reports complete, well-formed results.
"""

from __future__ import annotations

import json
import os
import sys
import textwrap
from dataclasses import replace

import pytest

from bench import __main__ as bench_main
from bench import bare_app, freshness_runner, loadgen, profiles, report, services, serving, sync  # noqa: F401  (they import)

pytestmark = pytest.mark.slow

TINY_SERVING = replace(serving.QUICK, records=500, rounds=1, connections=(8,), extra_rounds=1, seconds=1)
TINY_SYNC = replace(sync.QUICK, rows=400)


def test_serving_benchmark_compares_larder_with_the_bare_app_on_every_scenario():
    result = serving.run_serving(TINY_SERVING, workers=2, log=lambda _line: None)

    names = [s["name"] for s in result["scenarios"]]
    assert names[0] == "lookup by user_id" and "lookup by email (secondary index)" in names
    # The API has a batch route, so skipping its scenario is never legitimate here.
    assert result["skipped"] == {}
    assert any(name.startswith("batch of 10") for name in names), names
    for scenario in result["scenarios"]:
        for app in ("larder", "bare"):
            assert scenario[app]["requests_per_second"] > 0
            assert scenario[app]["non_2xx"] == 0 and scenario[app]["errors"] == 0
            assert scenario[app]["p50_ms"] <= scenario[app]["p90_ms"] <= scenario[app]["p99_ms"]
        assert scenario["ratio_rps"] > 0


@pytest.fixture(scope="module")
def sync_result():
    return sync.run_sync_bench(TINY_SYNC, log=lambda _line: None)


def test_sync_benchmark_reports_each_step_of_both_variants_with_peak_rss(sync_result):
    result = sync_result

    steps = [(r["variant"], r["step"]) for r in result["runs"]]
    assert steps == [(v, s) for v in ("plain", "liquid") for s in ("full", "no change", "1% changed")]
    written = {(r["variant"], r["step"]): r["counts"]["written"] for r in result["runs"]}
    assert written[("plain", "full")] == 400 and written[("plain", "no change")] == 0
    assert written[("liquid", "1% changed")] == 4  # ids 0, 100, 200, 300
    assert all(r["peak_rss_mb"] > 10 for r in result["runs"])
    assert all(r["peak_tree_rss_mb"] >= r["peak_rss_mb"] for r in result["runs"])
    assert result["rss_flatness"]["rows_small"] == 100
    assert "plain full" in result["extrapolated_to_1m"]  # labelled: measured below 1M rows


def test_results_are_written_as_json_and_png_with_every_target(tmp_path, sync_result):
    results = {"machine": report.machine(), "sync": sync_result}
    results["targets"] = report.targets(results)

    latest = report.write_results(results, tmp_path)

    assert json.loads(latest.read_text())["targets"] == results["targets"]
    assert (tmp_path / "latest.png").stat().st_size > 0
    assert {t["target"] for t in results["targets"]} >= {"sync 1M plain full", "sync peak memory"}


def test_profile_summary_ranks_functions_by_own_and_total_samples(tmp_path):
    folded = tmp_path / "p.folded"
    folded.write_text("main (app.py:1);map_row (mapping.py:70) 30\nmain (app.py:1);write (apply.py:9) 10\n")

    text = profiles._summarize(folded, tmp_path / "p.txt", "test").read_text()

    own = text.split("by own time")[1].split("by total time")[0]
    assert own.index("map_row (mapping.py)") < own.index("write (apply.py)")
    assert "100.0%       40  main (app.py)" in text.split("by total time")[1]


def test_the_postgres_section_compares_with_the_sync_sections_duckdb_full_sync_of_its_size(sync_result, postgres_url):
    """(postgres_url: Postgres is required in CI, skipped with the reason elsewhere.)"""
    result = sync.run_postgres_sync_bench(TINY_SYNC, log=lambda _line: None, duckdb_runs=sync_result["runs"])

    steps = [(r["variant"], r["step"]) for r in result["runs"]]
    assert steps == [("duckdb", "full"), ("postgres", "full"), ("postgres", "no change"), ("postgres", "1% changed")]
    duckdb_full = next(r for r in sync_result["runs"] if (r["variant"], r["step"]) == ("plain", "full"))
    assert result["runs"][0]["seconds"] == duckdb_full["seconds"]  # reused, not measured again
    written = [r["counts"]["written"] for r in result["runs"][1:]]
    assert written == [400, 0, 4]
    assert result["full_vs_duckdb"] == round(result["runs"][1]["seconds"] / max(duckdb_full["seconds"], 0.05), 2)


def test_command_line_accepts_its_options():
    args = bench_main._parser().parse_args(["--only", "sync", "--quick", "--sync-rows", "1000"])
    assert args.only == ["sync"] and args.quick and args.sync_rows == 1000


def test_a_measured_run_sums_the_memory_of_its_process_tree(tmp_path):
    """Worker processes count together: two children holding 150 MB each at the same time."""
    child = "import time; block = bytearray(150 * 1024 * 1024); block[::4096] = b'x' * len(block[::4096]); time.sleep(1.5)"
    parent = (f"import subprocess, sys; children = [subprocess.Popen([sys.executable, '-c', {child!r}]) for _ in (1, 2)]; "
              "[c.wait() for c in children]")
    run = services.run_measured([sys.executable, "-c", parent], env=dict(os.environ), cwd=tmp_path, timeout=60)
    assert 150 < run.check("a parent and its children").max_rss_mb < 250  # the largest process of the tree
    assert run.max_tree_rss_mb > 300
    assert run.max_tree_pss_mb > 300  # nothing shared: PSS and RSS agree


def test_a_measured_run_counts_pages_its_processes_share_once_in_the_pss(tmp_path):
    """A parent holding 200 MB forks two children that only read it: three RSS of 200 MB, one PSS of 200 MB."""
    script = textwrap.dedent("""
        import os, time
        block = bytearray(200 * 1024 * 1024)
        block[::4096] = b"x" * len(block[::4096])
        children = []
        for _ in range(2):
            pid = os.fork()
            if pid == 0:
                time.sleep(1.5)
                os._exit(0)
            children.append(pid)
        for pid in children:
            os.waitpid(pid, 0)
    """)
    run = services.run_measured([sys.executable, "-c", script], env=dict(os.environ), cwd=tmp_path, timeout=60)
    run.check("a parent and its forked children")
    assert run.max_tree_rss_mb > 550
    assert 190 < run.max_tree_pss_mb < 300
