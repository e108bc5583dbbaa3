"""The demo's own content, in one place: its collections, syncs, checks, sensors and schedules.

Every other test holds for any project (a team that adds a dbt model and a sync to the demo keeps a
green suite, tests/test_demo_extended.py checks that); these change only when the demo does.
"""

from __future__ import annotations


def test_the_demo_serves_one_collection_from_a_sync_file_and_a_dbt_meta_sync(demo):
    sources = {d.spec.name: (d.spec.collection, d.source.kind) for d in demo.project.syncs}

    assert sources == {
        "customer_profiles": ("customers", "file"),
        "customer_engagement": ("customers", "dbt_meta"),
    }
    assert demo.project.collection_names == ("customers",)
    assert demo.project.enabled_regions == ("us", "eu")


def test_the_demo_has_seven_checks_and_each_passes(demo_built):
    checks = {name: e for name, e in demo_built.materialized["checks"].items() if name.startswith("model/")}

    assert sorted(checks) == [
        "model/customer_engagement_model:customer_engagement_primary_index_not_null",
        "model/customer_engagement_model:customer_engagement_primary_index_unique",
        "model/customer_engagement_model:customer_engagement_records_within_size_limit",
        "model/customer_profiles_model:customer_profiles_email_unique",
        "model/customer_profiles_model:customer_profiles_primary_index_not_null",
        "model/customer_profiles_model:customer_profiles_primary_index_unique",
        "model/customer_profiles_model:customer_profiles_records_within_size_limit",
    ]
    assert all(e.passed for e in checks.values())


def test_the_demo_has_its_automation_and_cache_loss_sensors_and_one_stopped_schedule(demo):
    assert {s.name for s in demo.defs.sensors} == {"larder_automation", "us_cache_loss", "eu_cache_loss"}
    assert {s.name for s in demo.defs.schedules} == {"dbt_build_daily"}


def test_jane_doe_is_served_by_user_id_and_by_email_with_both_syncs_fields(demo_built):
    by_id = demo_built.record("us", "customers", "user_id", "12345")
    by_email = demo_built.record("eu", "customers", "email", "jane.doe@example.com")

    assert by_id == by_email
    assert by_id["first_name"] == "Jane"
    assert by_id["engagement"]["tier"] == "high"
