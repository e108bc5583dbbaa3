"""Lineage through gunicorn: collections, their syncs, models, upstream dbt nodes, fields and runs."""

from __future__ import annotations

import time

import pytest

from orchestration.sync import SyncFailed
from tests.serving.conftest import CUSTOMER_SYNC, CUSTOMERS, write_customers


def test_collections_lists_every_collection_with_its_indices_and_syncs(stack):
    response = stack.get("/v1/collections")

    assert response.status_code == 200
    by_name = {c["name"]: c for c in response.json()["collections"]}
    # the project's own two, and those the demo's dbt project declares in meta
    assert set(by_name) == set(stack.project.collection_names) >= {"customer", "orders"}
    assert by_name["customer"]["indices"] == ["id", "email"]
    assert by_name["customer"]["syncs"] == ["customer_profiles"]
    assert by_name["customer"]["max_age"] == 600


def test_lineage_names_each_fields_sync_and_source_column_or_template(stack):
    lineage = stack.get("/v1/collections/customer/lineage").json()

    fields = {f["field"]: f for f in lineage["fields"]}
    assert set(fields) == {"id", "email", "full_name", "recommendations", "first_name"}
    assert fields["full_name"]["source"] == {"column": "full_name"}
    assert fields["first_name"]["source"] == {"liquid": "{{ full_name | split: ' ' | first }}"}
    assert {f["sync"] for f in fields.values()} == {"customer_profiles"}


def test_lineage_gives_each_syncs_model_last_run_and_data_age(stack):
    stack.sync()  # its own last run, whatever ran before
    before = time.time()
    (sync,) = stack.get("/v1/collections/customer/lineage").json()["syncs"]

    assert sync["name"] == "customer_profiles"
    assert sync["model"] == {"kind": "sql", "sql": CUSTOMER_SYNC["model"]["sql"], "upstream": []}
    assert sync["delete"] == "delete"
    assert sync["regions"] == ["us", "eu"]
    last = sync["last_run"]
    assert last["status"] == "succeeded"
    assert last["counts"]["rows_read"] == 4
    assert last == sync["last_successful_run"]
    assert 0 <= sync["data_age_seconds"] <= before - last["started_at"] + 60


def test_lineage_of_a_dbt_sync_reaches_its_upstream_dbt_nodes_and_says_it_never_ran(stack):
    (sync,) = stack.get("/v1/collections/customers/lineage").json()["syncs"]

    model = sync["model"]
    assert model["kind"] == "dbt"
    assert model["unique_id"] == "model.larder_demo.customer_engagement"
    assert model["upstream"] == list(stack.project.dbt_models["customer_engagement"].upstream)
    assert any(node.startswith("seed.") or node.startswith("source.") for node in model["upstream"])
    assert sync["declared_in"]["kind"] == "dbt_meta"
    assert sync["last_run"] is None
    assert sync["data_age_seconds"] is None


def test_sync_runs_lists_recent_runs_newest_first_with_counts_and_rejection_samples(stack):
    stack.sync()

    runs = stack.get("/v1/syncs/customer_profiles/runs", params={"limit": 2}).json()["runs"]

    assert len(runs) == 2
    assert runs[0]["id"] > runs[1]["id"]
    assert runs[0]["counts"]["unchanged"] == 4
    assert runs[0]["rejection_samples"] == []
    assert runs[0]["duration_seconds"] >= 0


def test_unknown_syncs_collections_and_bad_limits_are_json_errors(stack):
    unknown_sync = stack.get("/v1/syncs/nope/runs")
    unknown_collection = stack.get("/v1/collections/nope/lineage")
    assert (unknown_sync.status_code, unknown_sync.json()["error"]["code"]) == (404, "unknown_sync")
    assert (unknown_collection.status_code, unknown_collection.json()["error"]["code"]) == (404, "unknown_collection")
    bad_limit = stack.get("/v1/syncs/orders/runs", params={"limit": "0"})
    assert bad_limit.status_code == 400
    assert bad_limit.json()["error"]["code"] == "invalid_parameter"


def test_a_failed_run_is_listed_with_its_error_and_rejection_samples(fresh_stack):
    # A stack of its own: the failed run stays the sync's last run.
    write_customers(fresh_stack.warehouse, CUSTOMERS + [(5, "bad@example.com", "Bad Json", "{not json")])
    with pytest.raises(SyncFailed):
        fresh_stack.sync()  # 1 of 5 rows rejected is over the default 10%

    (run,) = fresh_stack.get("/v1/syncs/customer_profiles/runs", params={"limit": 1}).json()["runs"]
    lineage = fresh_stack.get("/v1/collections/customer/lineage").json()["syncs"][0]

    assert run["status"] == "failed"
    assert "rejected" in run["error"]
    assert run["counts"]["rejected"] == 1
    assert "invalid JSON" in str(run["rejection_samples"])
    assert lineage["last_run"]["status"] == "failed"
    assert lineage["last_successful_run"]["status"] == "succeeded"
