"""Cache-loss sensors, evaluated with Dagster's test context against real memcached processes."""

from __future__ import annotations

import dagster as dg
import duckdb
import pytest

from orchestration.assets.keys import sync_op_name
from orchestration.definitions import build_definitions
from orchestration.store.cache import RecordCache

SYNC = {
    "name": "people",
    "model": {"sql": "select 1 as user_id"},
    "collection": "people",
    "primary_index": "user_id",
    "fields": [{"column": "user_id"}],
}


def evaluate(defs: dg.Definitions, region: str, instance: dg.DagsterInstance | None = None) -> dg.SensorExecutionData:
    sensor = defs.resolve_sensor_def(f"{region}_cache_loss")
    return sensor.evaluate_tick(dg.build_sensor_context(instance=instance or dg.DagsterInstance.ephemeral()))


def mark_populated(*servers: str) -> None:
    cache = RecordCache(servers)
    cache.write_sentinel("populated")
    cache.close()


@pytest.fixture
def two_regions(project_factory, memcached_pair):
    east, west = memcached_pair
    project = project_factory([SYNC], regions={"east": [east.server], "west": [west.server]})
    return build_definitions(project), east, west


def test_a_region_that_holds_its_sentinel_is_left_alone(two_regions):
    defs, east, _ = two_regions
    mark_populated(east.server)
    tick = evaluate(defs, "east")
    assert tick.run_requests == []
    assert "still holds its sentinel" in tick.skip_message


@pytest.mark.parametrize("lose_data", ["restart", "flush"])
def test_a_region_whose_memcached_lost_its_data_is_rehydrated(two_regions, lose_data):
    defs, east, west = two_regions
    mark_populated(east.server)
    mark_populated(west.server)
    getattr(east, lose_data)()
    (request,) = evaluate(defs, "east").run_requests
    assert request.job_name == "rehydrate_east"
    assert request.tags["larder/servers_lost"] == east.server
    assert evaluate(defs, "west").run_requests == []


def test_only_the_server_that_lost_its_sentinel_is_named_in_a_pool(project_factory, memcached_pair):
    first, second = memcached_pair
    defs = build_definitions(project_factory([SYNC], regions={"pool": [first.server, second.server]}))
    mark_populated(first.server, second.server)
    second.flush()
    (request,) = evaluate(defs, "pool").run_requests
    assert request.tags["larder/region"] == "pool"
    assert request.tags["larder/servers_lost"] == second.server


def test_an_unreachable_region_is_skipped_with_the_reason(two_regions):
    defs, east, _ = two_regions
    east.stop()
    tick = evaluate(defs, "east")
    assert tick.run_requests == []
    assert "region east is unreachable" in tick.skip_message


def test_no_second_rehydrate_is_launched_while_one_is_running(two_regions):
    defs, east, _ = two_regions
    instance = dg.DagsterInstance.ephemeral()
    instance.add_run(dg.DagsterRun(job_name="rehydrate_east", run_id="running-rehydrate", status=dg.DagsterRunStatus.STARTED))
    tick = evaluate(defs, "east", instance)
    assert tick.run_requests == []
    assert "already queued or running" in tick.skip_message


def test_the_rehydrate_the_sensor_requests_restores_the_last_records_to_a_stale_region_and_quiets_it(demo_built):
    jane = ("customers", "user_id", "12345")
    before = demo_built.record("us", *jane)["engagement"]["listens_30d"]
    try:
        # us is left out of a run that changes Jane: it is owed the change when it loses its data
        _sync_engagement(demo_built, listens_delta=1000, regions=["eu"])
        assert demo_built.record("us", *jane)["engagement"]["listens_30d"] == before
        demo_built.memcached["us"].restart()
        assert demo_built.record("us", *jane) is None
        (request,) = evaluate(demo_built.defs, "us").run_requests

        instance = dg.DagsterInstance.ephemeral()
        result = demo_built.defs.resolve_job_def(request.job_name).execute_in_process(instance=instance, tags=request.tags)

        assert result.success
        restored = demo_built.record("us", *jane)
        assert restored["full_name"] == "Jane Doe"
        assert restored["engagement"]["listens_30d"] == before + 1000  # the last value computed, not the one us had
        assert restored == demo_built.record("eu", *jane)
        assert evaluate(demo_built.defs, "us", instance).run_requests == []
    finally:
        _sync_engagement(demo_built, listens_delta=-1000)  # every region as the other tests expect it
    assert demo_built.record("us", *jane)["engagement"]["listens_30d"] == before


def _sync_engagement(demo, *, listens_delta: int, **config) -> None:
    """Change Jane's listens in the engagement model and run its sync (limited by `config`)."""
    relation = demo.project.dbt_model("customer_engagement").relation
    conn = duckdb.connect(str(demo.warehouse_path))
    try:
        conn.execute(f"update {relation} set listens_30d = listens_30d + {listens_delta} where user_id = 12345")
    finally:
        conn.close()
    result = demo.defs.resolve_job_def("sync_customer_engagement").execute_in_process(
        instance=dg.DagsterInstance.ephemeral(),
        run_config={"ops": {sync_op_name(demo.project.sync("customer_engagement")): {"config": config}}},
    )
    assert result.success
