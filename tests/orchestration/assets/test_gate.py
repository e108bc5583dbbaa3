"""The gate: failed blocking dbt tests upstream of a sync's model hold the sync back, and say so."""

from __future__ import annotations

import dagster as dg
import pytest

from orchestration.config.load import ConfigError
from orchestration.definitions import build_definitions
from tests.orchestration.conftest import PEOPLE

# Dagster's own automation tester selects with a beta parameter; nothing of ours is beta.
pytestmark = pytest.mark.filterwarnings("ignore::dagster.BetaWarning")

BAD_COUNTRY = PEOPLE.replace("2,Bo Chan,DE", "2,Bo Chan,XX")  # XX is no country: the relationships test fails
RELATIONSHIPS_TEST = "relationships_people_country__code__ref_countries_"


def step_failure(result: dg.ExecuteInProcessResult, step_key: str) -> dg.Failure:
    event = next(e for e in result.all_events if e.is_step_failure and e.step_key == step_key)
    return event.step_failure_data.user_failure_data


def materialized(result: dg.ExecuteInProcessResult) -> set[str]:
    return {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}


def test_a_failing_dbt_test_holds_the_sync_back_and_the_sync_asset_says_which(tiny_dbt, project_factory):
    defs = build_definitions(tiny_dbt.project(project_factory))
    instance = dg.DagsterInstance.ephemeral()
    dbt_build = defs.resolve_job_def("dbt_build")
    assert dbt_build.execute_in_process(instance=instance).success
    assert tiny_dbt.record("2")["country"] == "DE"

    tiny_dbt.people_seed.write_text(BAD_COUNTRY)
    before = dg.evaluate_automation_conditions(defs=defs, instance=instance)
    failed = dbt_build.execute_in_process(instance=instance, raise_on_error=False)
    assert not failed.success
    assert "dbt/people" in materialized(failed)  # dbt wrote the bad rows...
    assert "sync/people_sync" not in materialized(failed)  # ...and the sync did not follow

    # Automation asks for the sync next (as would a schedule or a click): it holds back.
    automation = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=before.cursor)
    assert automation.get_num_requested(dg.AssetKey(["sync", "people_sync"])) == 1
    held = defs.resolve_job_def("sync_people").execute_in_process(instance=instance, raise_on_error=False)
    assert not held.success
    failure = step_failure(held, "sync__people_sync")
    assert failure.description.startswith("sync people held back, nothing written")
    assert f"dbt test {RELATIONSHIPS_TEST} on dbt/people failed" in failure.description
    assert "on_failed_dbt_tests: sync" in failure.description
    assert [h["check"] for h in failure.metadata["held_back_by"].value] == [RELATIONSHIPS_TEST]
    # The sync asset's own check fails with the same words: its node and page show why.
    (guard,) = [e for e in held.get_asset_check_evaluations() if e.asset_key.path[0] == "sync"]
    assert (guard.asset_key.to_user_string(), guard.check_name, guard.passed) == ("sync/people_sync", "people_not_held_back", False)
    assert guard.description == failure.description
    assert tiny_dbt.record("2")["country"] == "DE"

    # Once the data is fixed and dbt passes again, the sync follows in the same run.
    tiny_dbt.people_seed.write_text(PEOPLE.replace("Bo Chan", "Bo Fixed"))
    fixed = dbt_build.execute_in_process(instance=instance)
    assert tiny_dbt.record("2") == {"user_id": 2, "name": "Bo Fixed", "country": "DE"}
    assert [(e.check_name, e.passed) for e in fixed.get_asset_check_evaluations() if e.asset_key.path[0] == "sync"] == [
        ("people_not_held_back", True)
    ]


def test_a_sync_that_asks_to_sync_anyway_writes_despite_a_failing_dbt_test(tiny_dbt, project_factory):
    defs = build_definitions(tiny_dbt.project(project_factory, on_failed_dbt_tests="sync"))
    instance = dg.DagsterInstance.ephemeral()
    tiny_dbt.people_seed.write_text(BAD_COUNTRY)
    assert not defs.resolve_job_def("dbt_build").execute_in_process(instance=instance, raise_on_error=False).success

    synced = defs.resolve_job_def("sync_people").execute_in_process(instance=instance)
    assert "sync/people_sync" in materialized(synced)
    assert tiny_dbt.record("2")["country"] == "XX"


def test_a_failing_warning_test_does_not_hold_the_sync_back(tiny_dbt, project_factory):
    schema = tiny_dbt.root / "dbt" / "models" / "schema.yml"
    schema.write_text(schema.read_text().replace("arguments:", "config: {severity: warn}\n              arguments:"))
    _parse(tiny_dbt)
    defs = build_definitions(tiny_dbt.project(project_factory))
    tiny_dbt.people_seed.write_text(BAD_COUNTRY)
    result = defs.resolve_job_def("dbt_build").execute_in_process(instance=dg.DagsterInstance.ephemeral())
    assert "sync/people_sync" in materialized(result)
    assert tiny_dbt.record("2")["country"] == "XX"


def test_on_failed_dbt_tests_is_refused_on_a_sync_without_a_dbt_model(project_factory):
    sync = {
        "name": "people", "model": {"sql": "select 1 as user_id"}, "collection": "people",
        "primary_index": "user_id", "fields": [{"column": "user_id"}], "on_failed_dbt_tests": "sync",
    }
    with pytest.raises(ConfigError, match="on_failed_dbt_tests: only a sync reading a dbt model has dbt tests"):
        project_factory([sync])
    with pytest.raises(ConfigError, match="on_failed_dbt_tests"):
        project_factory([{**sync, "model": {"dbt": "people"}, "on_failed_dbt_tests": "maybe"}])


def _parse(tiny_dbt) -> None:
    import subprocess
    import sys
    from pathlib import Path

    subprocess.run(
        [str(Path(sys.executable).with_name("dbt")), "parse", "--quiet", "--profiles-dir", ".", "--project-dir", "."],
        cwd=tiny_dbt.root / "dbt", check=True,
    )
