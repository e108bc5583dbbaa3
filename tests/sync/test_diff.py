"""Diffing against the snapshot: counts, full resync, and rejections (the record keeps what it had).

Every test runs on each kind of warehouse (DuckDB, Postgres, MariaDB): the diff is pushed down to
each, and must decide exactly alike.
"""

from __future__ import annotations

import pytest

from orchestration.sync import SyncFailed
from tests.sync.conftest import sync_config

COLUMNS = "id integer, name varchar, email varchar"


@pytest.fixture
def harness(any_harness):
    return any_harness


def counts_of(report, *names):
    return {name: report.counts[name] for name in names}


def test_runs_count_added_changed_removed_and_unchanged(harness):
    harness.table("people", COLUMNS, [(1, "Ann", "a@x"), (2, "Bob", "b@x"), (3, "Cid", "c@x")])
    harness.configure(sync_config())
    first = harness.run("people")
    assert counts_of(first, "rows_read", "added", "changed", "unchanged", "removed", "rejected") == {
        "rows_read": 3, "added": 3, "changed": 0, "unchanged": 0, "removed": 0, "rejected": 0,
    }
    harness.table("people", COLUMNS, [(1, "Ann", "a@x"), (2, "Bobby", "b@x"), (4, "Dee", "d@x")])
    second = harness.run("people")
    assert counts_of(second, "rows_read", "added", "changed", "unchanged", "removed", "rejected", "written") == {
        "rows_read": 3, "added": 1, "changed": 1, "unchanged": 1, "removed": 1, "rejected": 0, "written": 2,
    }
    assert harness.get("people", "id", 2) == {"id": 2, "name": "Bobby"}
    assert harness.get("people", "id", 3) is None
    assert harness.get("people", "id", 4) == {"id": 4, "name": "Dee"}


def test_unmapped_column_change_is_not_a_change(harness):
    harness.table("people", COLUMNS, [(1, "Ann", "a@x")])
    harness.configure(sync_config())
    harness.run("people")
    harness.table("people", COLUMNS, [(1, "Ann", "other@x")])
    assert harness.run("people").counts["unchanged"] == 1


def test_no_change_run_writes_nothing_to_the_cache(harness):
    harness.table("people", COLUMNS, [(1, "Ann", "a@x")])
    harness.configure(sync_config())
    harness.run("people")
    harness.cache().delete_many([k for k in _keys(harness, 1)])
    report = harness.run("people")
    assert report.counts["written"] == 0
    assert harness.get("people", "id", 1) is None  # proof nothing was rewritten


def test_full_resync_rewrites_everything_and_still_removes(harness):
    harness.table("people", COLUMNS, [(1, "Ann", "a@x"), (2, "Bob", "b@x")])
    harness.configure(sync_config())
    harness.run("people")
    harness.cache().delete_many(_keys(harness, 1))
    harness.table("people", COLUMNS, [(1, "Ann", "a@x")])
    report = harness.run("people", full_resync=True)
    assert counts_of(report, "changed", "rewritten", "unchanged", "removed", "written") == {
        "changed": 0, "rewritten": 1, "unchanged": 0, "removed": 1, "written": 1,
    }
    assert report.full_resync
    assert harness.get("people", "id", 1) == {"id": 1, "name": "Ann"}
    assert harness.get("people", "id", 2) is None


def _keys(harness, pk):
    from orchestration.store.keys import record_key

    return [record_key("people", "id", str(pk))]


def test_null_primary_key_is_rejected_and_the_run_goes_on(harness):
    harness.table("people", COLUMNS, [(1, "Ann", "a@x"), (None, "Nobody", "n@x")] + [(i, "P", f"{i}@x") for i in range(2, 12)])
    harness.configure(sync_config(rejections={"max_share": 0.5}))
    report = harness.run("people")
    assert report.counts["rejected"] == 1
    assert report.counts["added"] == 11
    assert report.rejection_samples[0]["reason"] == "primary index 'id' is null or empty"
    assert report.rejection_samples[0]["row"]["name"] == "Nobody"


def test_duplicate_primary_key_rejects_every_row_and_keeps_the_old_record(harness):
    harness.table("people", COLUMNS, [(1, "Ann", "a@x"), (2, "Bob", "b@x")])
    harness.configure(sync_config(rejections={"max_share": 1.0}))
    harness.run("people")
    harness.table("people", COLUMNS, [(1, "Ann v2", "a@x"), (1, "Ann v3", "a@x"), (1, "Ann v4", "a@x"), (2, "Bob", "b@x")])
    report = harness.run("people")
    assert counts_of(report, "rejected", "changed", "unchanged", "removed") == {
        "rejected": 3, "changed": 0, "unchanged": 1, "removed": 0,
    }
    assert all("duplicate primary index value '1'" in s["reason"] for s in report.rejection_samples)
    assert harness.get("people", "id", 1) == {"id": 1, "name": "Ann"}


def test_duplicate_extra_index_value_rejects_both_rows(harness):
    harness.table("people", COLUMNS, [(1, "Ann", "a@x"), (2, "Bob", "b@x"), (3, "Cid", "c@x")])
    config = sync_config(indices=["email"], fields=[{"column": "id"}, {"column": "name"}, {"column": "email"}],
                         rejections={"max_share": 1.0})
    harness.configure(config)
    harness.run("people")
    harness.table("people", COLUMNS, [(1, "Ann", "same@x"), (2, "Bob", "same@x"), (3, "Cid", "c2@x")])
    report = harness.run("people")
    assert counts_of(report, "rejected", "changed", "unchanged") == {"rejected": 2, "changed": 1, "unchanged": 0}
    assert {s["pk"] for s in report.rejection_samples} == {"1", "2"}
    assert harness.get("people", "email", "a@x") == {"id": 1, "name": "Ann", "email": "a@x"}
    assert harness.get("people", "email", "b@x") == {"id": 2, "name": "Bob", "email": "b@x"}
    assert harness.get("people", "email", "same@x") is None
    assert harness.get("people", "email", "c2@x")["id"] == 3


def test_oversize_and_liquid_errors_are_rejected_with_reasons(harness):
    harness.table("people", COLUMNS, [(1, "Ann", "a@x"), (2, "B" * 500, "b@x"), (3, "Cid", "not a number")]
                  + [(i, "P", f"{i}@x") for i in range(4, 10)])
    harness.configure(sync_config(
        fields=[{"column": "id"}, {"column": "name"},
                {"to": "score", "liquid": "{% if email contains '@' %}1{% else %}{{ email }}{% endif %}", "type": "number"}],
        max_record_bytes=200, rejections={"max_share": 0.5},
    ))
    report = harness.run("people")
    reasons = {s["pk"]: s["reason"] for s in report.rejection_samples}
    assert report.counts["rejected"] == 2
    assert "over the 200-byte limit" in reasons["2"]
    assert "'not a number' is not a number" in reasons["3"]
    assert harness.get("people", "id", 2) is None and harness.get("people", "id", 1)["score"] == 1


def test_rejected_row_keeps_the_previous_version_and_is_not_removed(harness):
    harness.table("people", COLUMNS, [(1, "Ann", "a@x")] + [(i, "P", f"{i}@x") for i in range(2, 10)])
    harness.configure(sync_config(fields=[{"column": "id"}, {"to": "name", "liquid": "{{ name | upcase }}"}],
                                  max_record_bytes=100, rejections={"max_share": 0.5}))
    harness.run("people")
    harness.table("people", COLUMNS, [(1, "A" * 200, "a@x")] + [(i, "P", f"{i}@x") for i in range(2, 10)])
    report = harness.run("people")
    assert report.counts["rejected"] == 1 and report.counts["removed"] == 0
    assert harness.get("people", "id", 1) == {"id": 1, "name": "ANN"}


def test_rejection_share_over_the_limit_fails_before_writing(harness):
    harness.table("people", COLUMNS, [(1, "Ann", "a@x"), (2, "Bob", "b@x")])
    harness.configure(sync_config(rejections={"max_share": 0.25}))
    harness.run("people")
    harness.table("people", COLUMNS, [(1, "Ann v2", "a@x"), (None, "x", "x"), (3, "Cid", "c@x")])
    with pytest.raises(SyncFailed, match=r"1 of 3 rows rejected \(33.3%\), over the 25.0% allowed; nothing was written") as error:
        harness.run("people")
    assert error.value.report.status == "failed"
    assert error.value.report.rejection_samples[0]["reason"].startswith("primary index")
    assert harness.get("people", "id", 1) == {"id": 1, "name": "Ann"}
    assert harness.get("people", "id", 2) == {"id": 2, "name": "Bob"}
    assert harness.get("people", "id", 3) is None
    # nothing written means the snapshot too: a good run afterwards sees every change
    harness.table("people", COLUMNS, [(1, "Ann v2", "a@x"), (3, "Cid", "c@x")])
    report = harness.run("people")
    assert counts_of(report, "added", "changed", "removed") == {"added": 1, "changed": 1, "removed": 1}


def test_a_changed_row_taking_the_index_value_of_an_unchanged_row_rejects_both(harness):
    harness.table("people", COLUMNS, [(1, "Ann", "a@x"), (2, "Bob", "b@x"), (3, "Cid", "c@x")])
    config = sync_config(indices=["email"], fields=[{"column": "id"}, {"column": "name"}, {"column": "email"}],
                         rejections={"max_share": 1.0})
    harness.configure(config)
    harness.run("people")
    harness.table("people", COLUMNS, [(1, "Ann", "a@x"), (2, "Bob", "a@x"), (3, "Cid", "c@x")])
    report = harness.run("people")
    assert counts_of(report, "rejected", "changed", "unchanged") == {"rejected": 2, "changed": 0, "unchanged": 1}
    assert {s["pk"] for s in report.rejection_samples} == {"1", "2"}
    assert harness.get("people", "email", "a@x") == {"id": 1, "name": "Ann", "email": "a@x"}
    assert harness.get("people", "email", "b@x") == {"id": 2, "name": "Bob", "email": "b@x"}
