"""Model assets: a sync's model, with its row count, column schema and a 100-row preview."""

from __future__ import annotations

import dagster as dg
import orjson

from orchestration.assets.models import PREVIEW_ROWS
from tests.orchestration.conftest import warehouse_rows


def test_model_materialization_records_row_count_and_column_schema(demo_built):
    metadata = demo_built.materialized["metadata"]["model/customer_profiles"]
    (rows,) = warehouse_rows(demo_built.warehouse_path, "select count(*) from customer_profiles")[0]
    columns = [name for (name,) in warehouse_rows(
        demo_built.warehouse_path,
        "select column_name from information_schema.columns where table_name = 'customer_profiles' order by ordinal_position",
    )]
    assert metadata["dagster/row_count"].value == rows > PREVIEW_ROWS
    schema = metadata["dagster/column_schema"].value
    assert [c.name for c in schema.columns] == columns
    assert {c.name: c.type for c in schema.columns}["user_id"] == "int"


def test_model_preview_shows_the_first_hundred_rows_with_nested_values_as_json(demo_built):
    preview = demo_built.materialized["metadata"]["model/customer_profiles"]["preview"].value
    assert len(preview.records) == PREVIEW_ROWS
    first = preview.records[0].data
    ((user_id, full_name),) = warehouse_rows(
        demo_built.warehouse_path, "select user_id, full_name from customer_profiles limit 1"
    )
    assert (first["user_id"], first["full_name"]) == (user_id, full_name)
    assert set(orjson.loads(first["summary_90d"])) == {"num_songs_listened", "top_genres", "top_artists"}
    assert isinstance(first["lifetime_value"], float)


def test_an_inline_sql_model_is_an_asset_named_after_its_sync_without_dbt_parents(project_factory, duckdb_url):
    import duckdb

    from orchestration.definitions import build_definitions

    conn = duckdb.connect(duckdb_url.removeprefix("duckdb:///"))
    conn.execute("create table users as select 1 as user_id, 'Ann' as name")
    conn.close()
    project = project_factory([{
        "name": "people", "model": {"sql": "select * from users"}, "collection": "people",
        "primary_index": "user_id", "fields": [{"column": "user_id"}, {"column": "name"}],
    }])
    defs = build_definitions(project)
    result = dg.materialize([defs.get_assets_def(dg.AssetKey(["model", "people_sql"]))], resources=defs.resources)
    model = defs.resolve_asset_graph().get(dg.AssetKey(["model", "people_sql"]))
    assert model.parent_keys == set()
    assert "select * from users" in model.description
    (event,) = result.get_asset_materialization_events()
    assert event.step_materialization_data.materialization.metadata["dagster/row_count"].value == 1
