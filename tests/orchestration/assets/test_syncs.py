"""Sync assets: materializing dbt → model → sync writes the records, and the run's page explains it."""

from __future__ import annotations

import dagster as dg
import duckdb

from orchestration.assets.keys import sync_op_name
from tests.orchestration.conftest import warehouse_rows

PROFILES = "sync/customer_profiles_sync"
ENGAGEMENT = "sync/customer_engagement_sync"


def test_materializing_the_demo_writes_jane_doe_to_every_region(demo_built):
    for region in ("us", "eu"):
        jane = demo_built.record(region, "customers", "user_id", "12345")
        assert jane["full_name"] == "Jane Doe"
        assert jane["first_name"] == "Jane"
        assert jane["engagement"]["tier"] in {"high", "medium", "low"}
        assert demo_built.record(region, "customers", "email", jane["email"]) == jane


def test_sync_materialization_records_counts_duration_and_regions(demo_built):
    metadata = demo_built.materialized["metadata"][PROFILES]
    (users,) = warehouse_rows(demo_built.warehouse_path, "select count(*) from customer_profiles")[0]
    assert metadata["added"].value == users
    assert metadata["written"].value == users
    assert {name: metadata[name].value for name in ("changed", "rewritten", "removed", "rejected", "unchanged")} == {
        "changed": 0, "rewritten": 0, "removed": 0, "rejected": 0, "unchanged": 0
    }
    assert metadata["duration_seconds"].value > 0
    assert metadata["regions"].value == ["us", "eu"]
    assert metadata["rejection_samples"].value == []


def test_sync_materialization_previews_the_records_it_wrote(demo_built):
    preview = demo_built.materialized["metadata"][ENGAGEMENT]["written_preview"].value
    assert 0 < len(preview) <= 20
    assert set(preview[0]) == {"user_id", "engagement"}
    assert {"last_listened_at", "listens_30d", "favourite_artist", "tier"} <= set(preview[0]["engagement"])


def test_rerunning_a_sync_finds_everything_unchanged_and_full_resync_rewrites_everything(demo_built):
    job = demo_built.defs.resolve_job_def("sync_customer_profiles")
    again = job.execute_in_process(instance=dg.DagsterInstance.ephemeral())
    unchanged = _sync_metadata(again, PROFILES)
    assert unchanged["unchanged"].value == unchanged["rows_read"].value > 0
    assert unchanged["written"].value == 0

    full = job.execute_in_process(
        instance=dg.DagsterInstance.ephemeral(),
        run_config={"ops": {"sync__customer_profiles_sync": {"config": {"full_resync": True}}}},
    )
    rewritten = _sync_metadata(full, PROFILES)
    assert rewritten["full_resync"].value is True
    assert rewritten["rewritten"].value == rewritten["written"].value == rewritten["rows_read"].value
    assert rewritten["changed"].value == 0  # rewritten, not changed: the records are the same


def test_a_run_limited_to_a_region_leaves_the_other_to_the_next_run_that_covers_it(demo_built):
    job = demo_built.defs.resolve_job_def("sync_customer_engagement")
    engagement = demo_built.project.dbt_model("customer_engagement").relation
    before = demo_built.record("eu", "customers", "user_id", "12345")["engagement"]["listens_30d"]

    def listens(delta: int, **config) -> dg.ExecuteInProcessResult:
        _warehouse_sql(demo_built, f"update {engagement} set listens_30d = listens_30d + {delta} where user_id = 12345")
        return job.execute_in_process(
            instance=dg.DagsterInstance.ephemeral(),
            run_config={"ops": {sync_op_name(demo_built.project.sync("customer_engagement")): {"config": config}}},
        )

    limited = listens(1000, regions=["us"])
    assert _sync_metadata(limited, ENGAGEMENT)["regions"].value == ["us"]
    assert demo_built.record("us", "customers", "user_id", "12345")["engagement"]["listens_30d"] == before + 1000
    assert demo_built.record("eu", "customers", "user_id", "12345")["engagement"]["listens_30d"] == before  # not written

    covering = listens(0)  # the model has not changed since: eu is written what the limited run left it
    assert _sync_metadata(covering, ENGAGEMENT)["caught_up"].value > 0
    for region in ("us", "eu"):
        assert demo_built.record(region, "customers", "user_id", "12345")["engagement"]["listens_30d"] == before + 1000
    listens(-1000)
    for region in ("us", "eu"):
        assert demo_built.record(region, "customers", "user_id", "12345")["engagement"]["listens_30d"] == before


def test_a_run_naming_a_region_the_sync_does_not_write_fails_with_the_reason(demo_built):
    result = demo_built.defs.resolve_job_def("sync_customer_engagement").execute_in_process(
        instance=dg.DagsterInstance.ephemeral(),
        run_config={"ops": {"sync__customer_engagement_sync": {"config": {"regions": ["mars"]}}}},
        raise_on_error=False,
    )
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert "does not write region(s) mars" in failure.step_failure_data.error.message


def test_a_sync_asset_shows_its_field_mapping_before_it_ever_runs(demo):
    sync = demo.defs.resolve_asset_graph().get(dg.AssetKey(["sync", "customer_profiles_sync"]))
    mapping = {row.data["field"]: row.data for row in sync.metadata["field_mapping"].records}
    assert mapping["user_id"] == {"field": "user_id", "source": "user_id", "type": "auto", "index": "primary"}
    assert mapping["email"]["index"] == "extra"
    assert mapping["90_day_summary"]["source"] == "summary_90d"
    assert mapping["first_name"]["source"] == "{{ full_name | split: ' ' | first }}"
    assert mapping["first_name"]["type"] == "string"
    assert "| `recommendations.concerts` | column `recommended_concerts` | auto |  |" in sync.description


def test_a_sync_asset_names_the_other_syncs_of_its_collection(demo):
    sync = demo.defs.resolve_asset_graph().get(dg.AssetKey(["sync", "customer_engagement_sync"]))
    others = {row.data["sync"]: row.data for row in sync.metadata["collection_syncs"].records}
    assert {"customer_profiles", "customer_engagement"} <= set(others)
    assert others["customer_profiles"]["trigger"] == "on upstream change"
    assert "Its records merge with those of customer_profiles" in sync.description


def _sync_metadata(result: dg.ExecuteInProcessResult, key: str) -> dict:
    (event,) = [e for e in result.get_asset_materialization_events() if e.asset_key.to_user_string() == key]
    return event.step_materialization_data.materialization.metadata


def _warehouse_sql(demo, sql: str) -> None:
    conn = duckdb.connect(str(demo.warehouse_path))
    try:
        conn.execute(sql)
    finally:
        conn.close()


def test_in_a_run_each_sync_starts_as_soon_as_its_model_is_read(demo_built):
    started = [e.step_key for e in demo_built.materialized["result"].all_events if e.is_step_start]
    for spec in demo_built.project.syncs_for("customers"):
        model = dg.AssetKey(["model", f"{spec.model.dbt}_model"]).to_python_identifier()
        assert started.index(f"sync__{spec.name}_sync") == started.index(model) + 1, started
