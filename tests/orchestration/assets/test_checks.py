"""Asset checks: a model whose rows cannot all be served fails the check of the sync reading it."""

from __future__ import annotations

import dagster as dg
import duckdb
import pytest

from orchestration.assets.checks import check_names
from orchestration.assets.models import model_key
from orchestration.definitions import build_definitions
from orchestration.store.cache import RecordCache
from orchestration.store.keys import record_key

USERS = [(1, "a@example.com", "Ann Lee"), (2, "b@example.com", "Bo Chan"), (3, "c@example.com", "Cy Park")]


@pytest.fixture
def checked(project_factory, duckdb_url, memcached):
    """Builds a one-sync project over a `users` table holding the given rows, and runs its checks."""

    def build(rows, *, block: bool = False, max_record_bytes: int | None = None, fields=None, indices=("email",)):
        conn = duckdb.connect(duckdb_url.removeprefix("duckdb:///"))
        conn.execute("create or replace table users (user_id integer, email varchar, full_name varchar)")
        if rows:
            conn.executemany("insert into users values (?, ?, ?)", rows)
        conn.close()
        sync = {
            "name": "people",
            "model": {"sql": "select * from users"},
            "collection": "people",
            "primary_index": "user_id",
            "indices": list(indices),
            "fields": fields or [{"column": "user_id"}, {"column": "email"}, {"column": "full_name"}],
            "block_on_failed_checks": block,
            "rejections": {"max_share": 1.0},
        }
        if max_record_bytes:
            sync["max_record_bytes"] = max_record_bytes
        project = project_factory([sync], regions={"test": [memcached.server]})
        return build_definitions(project)

    return build


def run_all(defs: dg.Definitions) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        list(defs.assets),
        resources=defs.resources,
        instance=dg.DagsterInstance.ephemeral(),
        raise_on_error=False,
    )


def verdicts(result: dg.ExecuteInProcessResult) -> dict[str, dg.AssetCheckEvaluation]:
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def materialized(result: dg.ExecuteInProcessResult) -> set[str]:
    return {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}


def test_every_check_of_the_demo_runs_and_passes(demo_built):
    checks = demo_built.materialized["checks"]
    larder_checks = {name: e for name, e in checks.items() if name.startswith("model/")}
    expected = {f"{model_key(d.spec).to_user_string()}:{name}" for d in demo_built.project.syncs for name in check_names(d.spec)}
    assert set(larder_checks) == expected
    assert all(e.passed for e in larder_checks.values()), {n: e.description for n, e in larder_checks.items()}


def test_a_model_with_a_duplicate_primary_key_fails_its_check(checked):
    result = run_all(checked([*USERS, (2, "b2@example.com", "Bo Again")]))
    verdict = verdicts(result)["people_primary_index_unique"]
    assert not verdict.passed
    assert verdict.severity == dg.AssetCheckSeverity.ERROR
    assert verdict.metadata["duplicate_values"].value == 1
    assert verdict.metadata["duplicate_samples"].value == [{"value": "2", "rows": 2}]
    assert verdicts(result)["people_email_unique"].passed


def test_a_model_without_duplicates_or_nulls_passes_every_check(checked):
    result = run_all(checked(USERS))
    assert {name: e.passed for name, e in verdicts(result).items()} == {
        "people_primary_index_not_null": True,
        "people_primary_index_unique": True,
        "people_email_unique": True,
        "people_records_within_size_limit": True,
    }


def test_rows_without_a_primary_key_fail_the_not_null_check(checked):
    result = run_all(checked([*USERS, (None, "d@example.com", "No Id")]))
    verdict = verdicts(result)["people_primary_index_not_null"]
    assert not verdict.passed
    assert verdict.metadata["null_rows"].value == 1


def test_a_value_of_an_extra_index_shared_by_two_rows_fails_its_check(checked):
    result = run_all(checked([*USERS, (4, "a@example.com", "Ann Twin")]))
    verdict = verdicts(result)["people_email_unique"]
    assert not verdict.passed
    assert verdict.metadata["duplicate_samples"].value == [{"value": "a@example.com", "rows": 2}]


def test_an_index_rendered_by_liquid_is_checked_on_the_rendered_values(checked):
    fields = [
        {"column": "user_id"},
        {"to": "handle", "liquid": "{{ full_name | split: ' ' | first | downcase }}"},
    ]
    result = run_all(checked([*USERS, (4, "d@example.com", "Ann Other")], fields=fields, indices=("handle",)))
    verdict = verdicts(result)["people_handle_unique"]
    assert not verdict.passed
    assert verdict.metadata["duplicate_samples"].value == [{"value": "ann", "rows": 2}]


def test_a_record_over_the_size_limit_fails_the_size_check(checked):
    result = run_all(checked([*USERS, (4, "d@example.com", "x" * 500)], max_record_bytes=200))
    verdict = verdicts(result)["people_records_within_size_limit"]
    assert not verdict.passed
    assert verdict.metadata["oversized"].value == 1
    assert verdict.metadata["oversized_samples"].value[0]["pk"] == "4"
    assert verdict.metadata["largest_record_bytes"].value > 500


def test_a_failed_check_holds_the_sync_back_when_it_asks_to_and_the_sync_says_which(checked, memcached):
    result = run_all(checked([*USERS, (2, "b2@example.com", "Bo Again")], block=True))
    assert not verdicts(result)["people_primary_index_unique"].passed
    assert "model/people_sql_model" in materialized(result)
    assert "sync/people_sync" not in materialized(result)
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert failure.step_key == "sync__people_sync"
    message = failure.step_failure_data.user_failure_data.description
    assert "held back" in message
    assert "Larder check people_primary_index_unique on model/people_sql_model failed" in message
    held = failure.step_failure_data.user_failure_data.metadata["held_back_by"].value
    assert [h["check"] for h in held] == ["people_primary_index_unique"]
    assert RecordCache([memcached.server]).get(record_key("people", "user_id", "1")) is None


def test_a_failed_check_is_reported_but_does_not_block_a_sync_that_does_not_ask_to(checked):
    result = run_all(checked([*USERS, (2, "b2@example.com", "Bo Again")], block=False))
    assert not verdicts(result)["people_primary_index_unique"].passed
    sync = next(e for e in result.get_asset_materialization_events() if e.asset_key.path[0] == "sync")
    assert sync.step_materialization_data.materialization.metadata["rejected"].value == 2
