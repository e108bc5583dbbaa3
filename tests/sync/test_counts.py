"""What a run reports: counts that say what was written and why, samples that show the real rows.

Each case runs on both diff paths: inside DuckDB (integer index column) and in Python (a DOUBLE
index column, which SQL cannot turn into the index's text).
"""

from __future__ import annotations

import pytest

from orchestration.cli import main
from orchestration.store.state import StateStore
from tests.sync.conftest import sync_config


@pytest.fixture(params=["integer", "double"], ids=["diff-in-duckdb", "diff-in-python"])
def id_type(request) -> str:
    return request.param


def people(**overrides) -> dict:
    return sync_config(rejections={"max_share": 1.0}, **overrides)


def test_a_mapping_change_that_leaves_bodies_alike_rewrites_without_changing(harness, id_type):
    harness.table("people", f"id {id_type}, name varchar", [(i, f"P{i}") for i in range(10)])
    harness.configure(people())
    harness.run("people")
    harness.configure(people(fields=[{"column": "id"}, {"column": "name", "type": "string"}]))  # same records
    report = harness.run("people")
    if id_type == "integer":  # DuckDB's fingerprint covers the mapping: every record is mapped and rewritten
        assert (report.counts["changed"], report.counts["rewritten"], report.counts["written"]) == (0, 10, 10)
    else:  # the Python diff compares the records themselves: nothing to write
        assert (report.counts["changed"], report.counts["unchanged"], report.counts["written"]) == (0, 10, 0)
    assert harness.run("people").counts["unchanged"] == 10


def test_a_mapping_change_that_alters_bodies_counts_them_changed(harness, id_type):
    harness.table("people", f"id {id_type}, name varchar", [(i, f"P{i}") for i in range(10)])
    harness.configure(people())
    harness.run("people")
    harness.table("people", f"id {id_type}, name varchar", [(i, f"P{i}" if i % 2 else f"Q{i}") for i in range(10)])
    harness.configure(people(fields=[{"column": "id"}, {"column": "name", "to": "full_name"}]))
    report = harness.run("people")
    assert (report.counts["changed"], report.counts["rewritten"], report.counts["written"]) == (10, 0, 10)
    assert harness.get("people", "id", 3) == {"id": 3, "full_name": "P3"}


def test_a_full_resync_reports_records_rewritten_and_only_real_changes_changed(harness, id_type):
    harness.table("people", f"id {id_type}, name varchar", [(i, f"P{i}") for i in range(10)])
    harness.configure(people())
    harness.run("people")
    harness.table("people", f"id {id_type}, name varchar", [(i, "changed" if i == 0 else f"P{i}") for i in range(10)])
    report = harness.run("people", full_resync=True)
    assert report.counts["changed"] == 1 and report.counts["rewritten"] == 9 and report.counts["written"] == 10
    assert report.counts["unchanged"] == 0


def test_a_clear_run_counts_the_records_it_recomposed_as_written(harness):
    scores = sync_config("scores", model="select * from scores", delete="clear",
                         fields=[{"column": "id"}, {"column": "score"}])
    harness.table("people", "id integer, name varchar", [(1, "Ann"), (2, "Bob")])
    harness.table("scores", "id integer, score integer", [(1, 10), (2, 20)])
    harness.configure(people(), scores)
    harness.run("people")
    harness.run("scores")
    harness.table("scores", "id integer, score integer", [(2, 20)])
    report = harness.run("scores")
    assert report.counts["removed"] == 1 and report.counts["written"] == 1  # record 1 rewritten without its score
    assert harness.get("people", "id", 1) == {"id": 1, "name": "Ann"}


def test_both_rows_of_a_duplicate_pair_are_sampled_with_their_own_row(harness, id_type):
    harness.table("people", f"id {id_type}, name varchar, email varchar",
                  [(1, "first one", "1@x"), (2, "Bob", "b@x"), (1, "second one", "1@y"),
                   (3, "Cy", "shared@x"), (4, "Di", "shared@x")])
    harness.configure(people(indices=["email"], fields=[{"column": "id"}, {"column": "name"}, {"column": "email"}]))
    report = harness.run("people")
    assert report.counts["rejected"] == 4
    rows = {(s["pk"], s["row"]["name"]) for s in report.rejection_samples}
    assert rows == {("1", "first one"), ("1", "second one"), ("3", "Cy"), ("4", "Di")}
    stored = StateStore(harness.project.spec.state.url).last_run("people").rejection_samples
    assert sorted(s["row"]["name"] for s in stored) == ["Cy", "Di", "first one", "second one"]


def test_samples_keep_lists_structs_and_dates_as_json_values(harness):
    harness.sql(
        "create table people as select * from (values "
        "(1, 'Ann', ['a', 'b'], {'city': 'Oslo', 'zip': 1}, date '2024-01-02', 1.50::decimal(4,2)), "
        "(null, 'Nobody', [], {'city': 'Rome', 'zip': 2}, date '2024-01-03', 2.00::decimal(4,2))"
        ") as t(id, name, tags, address, born, balance)"
    )
    harness.configure(people(fields=[{"column": "id"}, {"column": "name"}, {"column": "tags"}]))
    report = harness.run("people")
    (sample,) = report.rejection_samples
    assert sample["row"] == {"id": None, "name": "Nobody", "tags": [], "address": {"city": "Rome", "zip": 2},
                             "born": "2024-01-03", "balance": 2}
    stored = StateStore(harness.project.spec.state.url).last_run("people").rejection_samples
    assert stored == report.rejection_samples


def test_the_sync_command_prints_the_first_rejections_with_their_reasons(harness, capsys):
    harness.table("people", "id integer, name varchar", [(None, "Nobody"), (1, "Ann"), (1, "Ann again")]
                  + [(i, f"P{i}") for i in range(2, 20)])
    harness.configure(people())
    assert main(["--config", str(harness.project.path), "sync", "people"]) == 0
    out = capsys.readouterr().out
    assert "rejected 3" in out
    assert "rejected: primary index 'id' is null or empty (pk None)" in out
    assert "rejected: duplicate primary index value '1' (pk '1')" in out


def test_a_failed_run_prints_the_rejections_that_failed_it(harness, capsys):
    harness.table("people", "id integer, name varchar", [(None, "Nobody"), (1, "Ann")])
    harness.configure(sync_config())
    assert main(["--config", str(harness.project.path), "sync", "people"]) == 1
    err = capsys.readouterr().err
    assert "nothing was written" in err and "rejected: primary index 'id' is null or empty (pk None)" in err
