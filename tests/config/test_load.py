"""Loading a project: sync files and dbt meta become the same typed specs; errors name file and field."""

from __future__ import annotations

import json

import pytest

from orchestration.config import ConfigError, DeleteBehaviour, FieldType, load_project

BASE = {
    "name": "people",
    "model": {"sql": "select 1 as id, 'Ann' as name"},
    "collection": "people",
    "primary_index": "id",
    "fields": [{"column": "id"}, {"column": "name"}],
}


def sync(**overrides):
    return {**BASE, **overrides}


def test_sync_file_becomes_a_typed_spec_with_defaults(project_factory):
    project = project_factory([sync(indices=["name"], fields=[
        {"column": "id"}, {"column": "name"}, {"to": "greeting", "liquid": "Hi {{ name }}", "type": "string"},
        {"column": "name", "to": "profile.display_name"},
    ])])
    spec = project.sync("people")
    assert spec.index_names == ("id", "name")
    assert spec.delete is DeleteBehaviour.clear
    assert spec.fields[2].type is FieldType.string
    assert spec.fields[3].path == ("profile", "display_name")
    assert spec.rejections.max_share == 0.1
    assert project.max_record_bytes(spec) == 1_000_000
    assert project.regions_of(spec) == ("test",)
    assert project.source_of("people").location.endswith("syncs/people.yaml")


def _error(project_factory, *syncs, **kwargs) -> str:
    with pytest.raises(ConfigError) as error:
        project_factory(list(syncs), **kwargs)
    return str(error.value)


@pytest.mark.parametrize(
    ("overrides", "field", "message"),
    [
        ({"collection": "my-people"}, "collection", "must be 1-64 alphanumeric characters"),
        ({"primary_index": "email"}, "primary_index", "index 'email' is not a mapped top-level field"),
        ({"indices": ["nickname"]}, "indices", "index 'nickname' is not a mapped top-level field"),
        ({"fields": [{"column": "id"}, {"to": "x", "liquid": "{{ name | upcase "}]}, "fields[1].liquid", "Liquid syntax error"),
        ({"fields": [{"column": "id"}, {"column": "a", "liquid": "x", "to": "b"}]}, "fields[1]", "exactly one of 'column' or 'liquid'"),
        ({"fields": [{"column": "id"}, {"to": "x", "liquid": "1", "type": "date"}]}, "fields[1].type", "Input should be"),
        ({"delete": "purge"}, "delete", "Input should be 'keep', 'clear' or 'delete'"),
        ({"rejections": {"max_share": 2}}, "rejections.max_share", "less than or equal to 1"),
        ({"trigger": {"schedule": "every minute"}}, "trigger.schedule", "is not a 5-part cron expression"),
        ({"regions": ["mars"]}, "regions", "unknown region 'mars' (configured: test)"),
        ({"surprise": 1}, "surprise", "Extra inputs are not permitted"),
    ],
)
def test_invalid_sync_file_names_the_file_and_field(project_factory, overrides, field, message):
    text = _error(project_factory, sync(**overrides))
    assert f"syncs/people.yaml: {field}: " in text
    assert message in text


def test_two_syncs_claiming_the_same_field_of_a_collection_is_an_error(project_factory):
    text = _error(
        project_factory,
        sync(fields=[{"column": "id"}, {"column": "name", "to": "profile.name"}]),
        sync(name="more", fields=[{"column": "id"}, {"column": "name", "to": "profile"}]),
    )
    assert ("syncs/people.yaml: fields[1].to: field 'profile.name' of collection 'people' overlaps 'profile', "
            "written by fields[1] of sync 'more' (") in text
    assert "syncs/more.yaml); syncs of one collection write disjoint fields" in text


@pytest.mark.parametrize(
    ("first", "second", "message"),
    [
        ("orders", "orders.first_order",
         "fields[2].to: field 'orders.first_order' is nested in 'orders', which fields[1] writes"),
        ("orders.first_order", "orders",
         "fields[2].to: field 'orders' holds 'orders.first_order', which fields[1] writes"),
        ("a.b", "a.b.c", "fields[2].to: field 'a.b.c' is nested in 'a.b', which fields[1] writes"),
    ],
)
def test_a_field_nested_in_another_field_of_the_same_sync_is_an_error(project_factory, first, second, message):
    text = _error(project_factory, sync(fields=[{"column": "id"}, {"column": "name", "to": first},
                                                 {"column": "name", "to": second}]))
    assert f"syncs/people.yaml: {message}" in text
    assert "a field is either a value or an object of fields" in text


def test_a_field_nested_in_a_field_of_another_sync_names_both_files_and_fields(project_factory, tmp_path):
    text = _error(
        project_factory,
        sync(fields=[{"column": "id"}, {"column": "name"}, {"column": "name", "to": "orders"}]),
        sync(name="more", fields=[{"column": "id"}, {"column": "name", "to": "orders.first_order"}]),
    )
    assert ("syncs/people.yaml: fields[2].to: field 'orders' of collection 'people' overlaps 'orders.first_order', "
            "written by fields[1] of sync 'more' (") in text
    assert "syncs/more.yaml); syncs of one collection write disjoint fields" in text


def test_in_a_file_of_several_syncs_the_error_names_the_sync_entry(project_factory, tmp_path):
    (tmp_path / "more").mkdir()
    conflicting = sync(name="second", fields=[{"column": "id"}, {"column": "name", "to": "a"},
                                              {"column": "name", "to": "a.b"}])
    (tmp_path / "more" / "many.yaml").write_text(json.dumps({"syncs": [sync(name="first"), conflicting]}))
    text = _error(project_factory, extra={"syncs": ["more/*.yaml"]})
    assert "more/many.yaml: syncs[1].fields[2].to: field 'a.b' is nested in 'a', which fields[1] writes" in text


def test_merged_syncs_must_share_the_primary_index(project_factory):
    text = _error(project_factory, sync(), sync(name="other", primary_index="name"))
    assert "syncs/people.yaml: primary_index: 'id' differs from 'name', the primary index of collection 'people'" in text


def test_sync_names_are_unique(project_factory, tmp_path):
    (tmp_path / "more").mkdir()
    (tmp_path / "more" / "zz.yaml").write_text(json.dumps({"syncs": [sync(), sync(name="second")]}))
    text = _error(project_factory, sync(), extra={"syncs": ["syncs/*.yaml", "more/*.yaml"]})
    assert "more/zz.yaml: name: sync 'people' is also declared in" in text


def test_unknown_region_in_larder_yaml_shape_errors(project_factory):
    text = _error(project_factory, sync(), extra={"regions": {"us": {"servers": ["nohost"]}}})
    assert "larder.yaml: regions.us.servers: server 'nohost' must be host:port" in text


def test_environment_references_are_interpolated(project_factory, monkeypatch):
    monkeypatch.setenv("LARDER_TEST_MC", "127.0.0.1:22122")
    project = project_factory([sync()], extra={"regions": {"us": {"servers": ["${LARDER_TEST_MC}", "${NOPE_X:-h:1}"]}}})
    assert project.regions["us"].servers == ("127.0.0.1:22122", "h:1")
    monkeypatch.delenv("LARDER_TEST_MC")
    assert "environment variable LARDER_TEST_MC is not set" in _error(
        project_factory, sync(), extra={"regions": {"us": {"servers": ["${LARDER_TEST_MC}"]}}}
    )


def test_unknown_column_names_the_file_and_field(project_factory):
    project = project_factory([sync(fields=[{"column": "id"}, {"column": "nmae"}, {"to": "x", "liquid": "{{ age }}"}])])
    spec = project.sync("people")
    with pytest.raises(ConfigError, match=r"syncs/people.yaml: fields\[1\].column: unknown column 'nmae' in inline SQL "
                                          r"model of sync 'people'"):
        project.check_columns(spec, ["id", "name"])
    with pytest.raises(ConfigError, match=r"syncs/people.yaml: fields\[2\].liquid: template reads unknown column\(s\) age"):
        project.check_columns(spec, ["id", "nmae"])


def _manifest(tmp_path, meta: dict, patch_path: str | None = "demo://models/schema.yml") -> dict:
    dbt_dir = tmp_path / "dbt"
    (dbt_dir / "target").mkdir(parents=True, exist_ok=True)
    node = {
        "resource_type": "model", "name": "people_model", "schema": "main", "alias": "people_model",
        "patch_path": patch_path, "original_file_path": "models/people_model.sql",
        "description": "", "columns": {"id": {}, "name": {}}, "depends_on": {"nodes": []},
        "config": {"meta": meta},
    }
    (dbt_dir / "target" / "manifest.json").write_text(json.dumps({"nodes": {"model.demo.people_model": node}}))
    return {"dbt": {"project_dir": "dbt"}}


def test_dbt_meta_declares_a_sync_reading_its_own_model(project_factory, tmp_path):
    entry = {k: v for k, v in BASE.items() if k != "model"} | {"name": "from_dbt", "delete": "delete"}
    project = project_factory([], extra=_manifest(tmp_path, {"larder": {"syncs": [entry]}}))
    spec = project.sync("from_dbt")
    assert spec.model.dbt == "people_model"
    assert project.model_sql(spec) == 'select * from "main"."people_model"'
    assert project.source_of("from_dbt").kind == "dbt_meta"


def test_a_dbt_model_without_a_yaml_file_is_named_by_its_sql_file(project_factory, tmp_path):
    project = project_factory([], extra=_manifest(tmp_path, {}, patch_path=None))  # dbt writes null

    assert project.dbt_models["people_model"].file == "models/people_model.sql"


def test_dbt_meta_errors_name_the_model_and_field(project_factory, tmp_path):
    entry = {k: v for k, v in BASE.items() if k != "model"} | {"collection": "bad name"}
    text = _error(project_factory, extra=_manifest(tmp_path, {"larder": {"syncs": [entry]}}))
    assert "dbt model people_model (models/schema.yml): meta.larder.syncs[0].collection: " in text
    entry = {k: v for k, v in BASE.items()}
    text = _error(project_factory, extra=_manifest(tmp_path, {"larder": {"syncs": [entry]}}))
    assert "meta.larder.syncs[0].model: a sync in dbt meta always reads its own model" in text


def test_missing_file_and_invalid_yaml_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match="larder.yaml: cannot read"):
        load_project(tmp_path / "larder.yaml")
    (tmp_path / "larder.yaml").write_text("regions: [unclosed")
    with pytest.raises(ConfigError, match="larder.yaml: invalid YAML"):
        load_project(tmp_path / "larder.yaml")


def test_a_missing_dbt_manifest_says_how_to_parse_that_project(project_factory, tmp_path):
    (tmp_path / "shop").mkdir()
    text = _error(project_factory, extra={"dbt": {"project_dir": "shop", "profiles_dir": "profiles"}})
    assert f"{tmp_path / 'shop' / 'target' / 'manifest.json'}: dbt manifest missing; run " in text
    assert f"dbt parse --project-dir {tmp_path / 'shop'} --profiles-dir {tmp_path / 'profiles'}" in text
    assert "make manifest" not in text
