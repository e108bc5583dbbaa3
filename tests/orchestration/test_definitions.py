"""The code location: loads, validates, and has the demo's graph, jobs, sensors and schedules."""

from __future__ import annotations

import dagster as dg

from orchestration.assets.checks import check_names
from orchestration.assets.keys import dbt_model_key, model_key, sync_key
from orchestration.jobs import rehydrate_job_name, sync_job_name


def keys(demo) -> set[str]:
    return {key.to_user_string() for key in demo.defs.resolve_asset_graph().get_all_asset_keys()}


def test_demo_definitions_load_and_validate(demo):
    dg.Definitions.validate_loadable(demo.defs)


def test_the_code_location_loads_the_demo_project_when_dagster_calls_it(demo):
    from orchestration.definitions import defs

    loaded = defs()
    dg.Definitions.validate_loadable(loaded)
    assert {j.name for j in loaded.resolve_all_job_defs()} == {j.name for j in demo.defs.resolve_all_job_defs()}


def test_every_dbt_model_is_an_asset_under_the_dbt_prefix(demo):
    assert {"dbt/customer_profiles", "dbt/customer_engagement", "dbt/stg_users", "dbt/users"} <= keys(demo)


def test_each_sync_reads_a_model_asset_downstream_of_its_dbt_model_and_feeds_its_collection(demo):
    graph = demo.defs.resolve_asset_graph()
    for declared in demo.project.syncs:
        spec = declared.spec
        model = graph.get(model_key(spec))
        sync = graph.get(sync_key(spec))
        assert model.parent_keys == ({dbt_model_key(spec.model.dbt)} if spec.model.dbt else set())
        assert sync.parent_keys == {model.key}
        assert sync.child_keys == {dg.AssetKey(["collection", spec.collection])}


def test_a_dbt_model_its_larder_model_and_its_sync_carry_different_labels_and_kinds(demo):
    graph = demo.defs.resolve_asset_graph()
    chain = [dg.AssetKey(["dbt", "customer_profiles"]), dg.AssetKey(["model", "customer_profiles_model"]),
             dg.AssetKey(["sync", "customer_profiles_sync"]), dg.AssetKey(["collection", "customers"])]
    labels = [key.path[-1] for key in chain]  # what the asset graph writes on each node
    assert labels == ["customer_profiles", "customer_profiles_model", "customer_profiles_sync", "customers"]
    kinds = [frozenset(graph.get(key).kinds) for key in chain]
    assert len(set(kinds)) == 4, kinds


def test_the_merge_of_two_syncs_is_one_collection_node_fed_by_both(demo):
    collection = demo.defs.resolve_asset_graph().get(dg.AssetKey(["collection", "customers"]))
    names = [spec.name for spec in demo.project.syncs_for("customers")]
    assert {"customer_profiles", "customer_engagement"} <= set(names)
    assert collection.parent_keys == {dg.AssetKey(["sync", f"{name}_sync"]) for name in names}
    assert f"merges the fields of {len(names)} syncs ({', '.join(names)})" in collection.description
    syncs = {record.data["sync"]: record.data for record in collection.metadata["syncs"].records}
    assert list(syncs) == names
    assert "engagement.tier" in syncs["customer_engagement"]["fields"]
    assert {"crm-data@example.com", "growth-analytics@example.com"} <= set(collection.owners)


def test_seeds_are_described_by_their_file_not_by_an_empty_sql_block(demo):
    seed = demo.defs.resolve_asset_graph().get(dg.AssetKey(["dbt", "artists"]))
    assert seed.description == "dbt seed artists: the rows of seeds/artists.csv."


def test_a_sync_declared_in_dbt_meta_needs_no_python_to_join_the_graph(demo):
    declared = next(d for d in demo.project.syncs if d.source.kind == "dbt_meta")
    sync = demo.defs.resolve_asset_graph().get(dg.AssetKey(["sync", f"{declared.spec.name}_sync"]))
    assert declared.spec.name == "customer_engagement"
    assert sync.owners == ["growth-analytics@example.com"]
    assert "dbt model customer_engagement" in sync.description


def test_model_and_sync_assets_are_grouped_by_collection_with_descriptions_and_owners(demo):
    graph = demo.defs.resolve_asset_graph()
    profiles = graph.get(dg.AssetKey(["sync", "customer_profiles_sync"]))
    model = graph.get(dg.AssetKey(["model", "customer_profiles_model"]))
    assert profiles.group_name == model.group_name == "customers"
    assert profiles.owners == model.owners == ["crm-data@example.com"]
    assert profiles.description.startswith("Customer profile with listening summary")
    assert model.description.startswith("One row per user: the customer profile served by Larder.")


def test_every_sync_has_its_checks_on_its_model(demo):
    graph = demo.defs.resolve_asset_graph()
    for declared in demo.project.syncs:
        expected = {dg.AssetCheckKey(model_key(declared.spec), n) for n in check_names(declared.spec)}
        assert expected <= graph.asset_check_keys
    assert dg.AssetCheckKey(dg.AssetKey(["model", "customer_profiles_model"]), "customer_profiles_email_unique") in graph.asset_check_keys


def test_jobs_one_per_sync_one_for_all_syncs_one_rehydrate_per_region_and_dbt_build(demo):
    names = {job.name for job in demo.defs.resolve_all_job_defs()}
    expected = {sync_job_name(n) for n in demo.project.sync_names} | {rehydrate_job_name(r) for r in ("us", "eu")}
    assert expected | {"all_syncs", "dbt_build"} <= names


def test_sync_job_selects_its_model_its_sync_its_collection_and_the_model_checks(demo):
    job = demo.defs.resolve_job_def(sync_job_name("customer_profiles"))
    assert {k.to_user_string() for k in job.asset_layer.executable_asset_keys} == {
        "model/customer_profiles_model", "sync/customer_profiles_sync", "collection/customers"
    }
    assert {k.name for k in job.asset_layer.asset_graph.asset_check_keys} >= set(check_names(demo.project.sync("customer_profiles")))


def test_sensors_cover_automation_and_each_region_losing_its_cache(demo):
    expected = {"larder_automation", *(f"{region}_cache_loss" for region in demo.project.enabled_regions)}
    assert {s.name for s in demo.defs.sensors} == expected
