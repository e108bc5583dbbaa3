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
        ({"primary_index": "email"}, "(top level)", "index 'email' is not a mapped top-level field"),
        ({"indices": ["nickname"]}, "(top level)", "index 'nickname' is not a mapped top-level field"),
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
            "written by sync 'more'") in text


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
    with pytest.raises(ConfigError, match=r"syncs/people.yaml: fields\[1\].column: unknown column 'nmae' in model 'sql'"):
        project.check_columns(spec, ["id", "name"])
    with pytest.raises(ConfigError, match=r"syncs/people.yaml: fields\[2\].liquid: template reads unknown column\(s\) age"):
        project.check_columns(spec, ["id", "nmae"])


def _manifest(tmp_path, meta: dict) -> dict:
    dbt_dir = tmp_path / "dbt"
    (dbt_dir / "target").mkdir(parents=True, exist_ok=True)
    node = {
        "resource_type": "model", "name": "people_model", "schema": "main", "alias": "people_model",
        "patch_path": "demo://models/schema.yml", "original_file_path": "models/people_model.sql",
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
