"""Triggers: cron schedules per sync, and syncs that follow their upstream dbt models by automation."""

from __future__ import annotations

import dagster as dg
import pytest

from orchestration.definitions import build_definitions

# Dagster's own automation tester selects with a beta parameter; nothing of ours is beta.
pytestmark = pytest.mark.filterwarnings("ignore::dagster.BetaWarning")


def sync(name: str, trigger: dict | None = None) -> dict:
    spec = {
        "name": name,
        "model": {"sql": "select 1 as user_id"},
        "collection": name.replace("_", ""),
        "primary_index": "user_id",
        "fields": [{"column": "user_id"}],
    }
    return {**spec, "trigger": trigger} if trigger else spec


def test_a_sync_with_a_cron_trigger_gets_a_running_schedule_of_its_job(project_factory):
    defs = build_definitions(project_factory([
        sync("hourly", {"schedule": "15 * * * *", "timezone": "Europe/Paris"}),
        sync("by_hand"),
    ]))
    schedule = defs.resolve_schedule_def("hourly_schedule")
    assert (schedule.cron_schedule, schedule.execution_timezone) == ("15 * * * *", "Europe/Paris")
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    (request,) = schedule.evaluate_tick(dg.build_schedule_context(instance=dg.DagsterInstance.ephemeral())).run_requests
    assert schedule.job_name == "sync_hourly"
    assert request.run_config == {}
    assert [s.name for s in defs.schedules] == ["hourly_schedule"]


def test_manual_syncs_have_no_automation_condition(project_factory):
    defs = build_definitions(project_factory([sync("by_hand")]))
    graph = defs.resolve_asset_graph()
    assert graph.get(dg.AssetKey(["sync", "by_hand_sync"])).automation_condition is None
    assert graph.get(dg.AssetKey(["model", "by_hand_sql_model"])).automation_condition is None
    assert graph.get(dg.AssetKey(["collection", "byhand"])).automation_condition is None


def test_the_demo_has_a_stopped_daily_dbt_build_schedule(demo):
    schedule = demo.defs.resolve_schedule_def("dbt_build_daily")
    assert schedule.job_name == "dbt_build"
    assert schedule.default_status == dg.DefaultScheduleStatus.STOPPED


def test_a_sync_on_upstream_change_is_requested_once_its_dbt_model_materializes(demo):
    instance = dg.DagsterInstance.ephemeral()
    first = dg.evaluate_automation_conditions(defs=demo.defs, instance=instance)
    assert first.total_requested == 0  # nothing upstream exists yet

    instance.report_runless_asset_event(dg.AssetMaterialization(dg.AssetKey(["dbt", "customer_profiles"])))
    second = dg.evaluate_automation_conditions(defs=demo.defs, instance=instance, cursor=first.cursor)

    requested = {
        key.to_user_string() for key in demo.defs.resolve_asset_graph().get_all_asset_keys()
        if second.get_num_requested(key)
    }
    assert requested == {"model/customer_profiles_model", "sync/customer_profiles_sync"}


def test_the_automation_sensor_ticks_every_five_seconds_and_runs_by_default(demo):
    sensor = demo.defs.resolve_sensor_def("larder_automation")
    assert sensor.minimum_interval_seconds == 5
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING


def test_a_new_sync_on_upstream_change_runs_its_first_materialization_by_itself(project_factory):
    """Its upstream need not change: a sync that was never run is run once, and not asked again."""
    defs = build_definitions(project_factory([sync("follows", {"on_upstream_change": True}), sync("by_hand")]))
    new_sync = {"model/follows_sql_model", "sync/follows_sync", "collection/follows"}
    instance = dg.DagsterInstance.ephemeral()

    first = dg.evaluate_automation_conditions(defs=defs, instance=instance)
    second = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=first.cursor)
    for key in new_sync:
        instance.report_runless_asset_event(dg.AssetMaterialization(dg.AssetKey.from_user_string(key)))
    third = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=second.cursor)

    assert requested(defs, first) == new_sync
    assert requested(defs, second) == set()  # requested once; the run is on its way
    assert requested(defs, third) == set()


def requested(defs: dg.Definitions, result) -> set[str]:
    return {key.to_user_string() for key in defs.resolve_asset_graph().get_all_asset_keys() if result.get_num_requested(key)}


def test_dbt_build_serves_a_change_in_its_own_run_and_automation_does_not_sync_it_a_second_time(tiny_dbt, project_factory):
    defs = build_definitions(tiny_dbt.project(project_factory))
    instance = dg.DagsterInstance.ephemeral()
    before = dg.evaluate_automation_conditions(defs=defs, instance=instance)

    tiny_dbt.people_seed.write_text(tiny_dbt.people_seed.read_text().replace("Ann Lee", "Ann Fresh"))
    run = defs.resolve_job_def("dbt_build").execute_in_process(instance=instance)
    assert [e.asset_key.to_user_string() for e in run.get_asset_materialization_events()][-4:] == [
        "dbt/people", "model/people_model", "sync/people_sync", "collection/people"
    ]
    assert tiny_dbt.record("1")["name"] == "Ann Fresh"
    # The run's parse is kept for the next run, which then parses only what changed.
    target = tiny_dbt.root / "dbt" / "target"
    (this_run,) = target.glob(f"larder_dbt_models-{run.run_id[:7]}-*/partial_parse.msgpack")
    assert (target / "partial_parse.msgpack").read_bytes() == this_run.read_bytes()

    after = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=before.cursor)
    assert after.total_requested == 0

    # A rebuild outside Larder's jobs (another tool, a run of the dbt asset alone) still brings the sync.
    instance.report_runless_asset_event(dg.AssetMaterialization(dg.AssetKey(["dbt", "people"])))
    outside = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=after.cursor)
    requested = {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys() if outside.get_num_requested(k)}
    assert requested == {"model/people_model", "sync/people_sync", "collection/people"}

