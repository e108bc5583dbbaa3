"""Model assets: a sync's model, with its row count, warehouse column types, dbt column
descriptions and a preview that fits the page."""

from __future__ import annotations

import dagster as dg

from orchestration.assets.models import PREVIEW_CELL_CHARS, PREVIEW_ROWS, warehouse_column_types
from orchestration.sync.warehouse import Warehouse
from tests.orchestration.conftest import warehouse_rows

PROFILES_MODEL = "model/customer_profiles_model"


def test_model_materialization_records_row_count_and_the_warehouse_types_of_its_columns(demo_built):
    metadata = demo_built.materialized["metadata"][PROFILES_MODEL]
    (rows,) = warehouse_rows(demo_built.warehouse_path, "select count(*) from customer_profiles")[0]
    described = warehouse_rows(demo_built.warehouse_path, "describe customer_profiles")
    assert metadata["dagster/row_count"].value == rows > PREVIEW_ROWS
    schema = metadata["dagster/column_schema"].value
    assert [(c.name, c.type) for c in schema.columns] == [(name, kind) for name, kind, *_ in described]
    types = {c.name: c.type for c in schema.columns}
    assert types["user_id"] == "INTEGER"
    assert types["lifetime_value"].startswith("DECIMAL(")
    assert types["summary_90d"].startswith("STRUCT(")


def test_model_columns_carry_their_dbt_descriptions(demo_built):
    schema = demo_built.materialized["metadata"][PROFILES_MODEL]["dagster/column_schema"].value
    descriptions = {c.name: c.description for c in schema.columns}
    assert descriptions["user_id"] == "Primary key of the user."
    assert descriptions["churn_risk"] == "Probability (0-1) that the user cancels in the next 30 days."
    before_any_run = demo_built.defs.resolve_asset_graph().get(dg.AssetKey(["model", "customer_profiles_model"]))
    documented = {c.name: c.description for c in before_any_run.metadata["dagster/column_schema"].columns}
    assert documented["full_name"] == "The user's full name."


def test_model_preview_fits_the_page_with_nested_values_as_short_json(demo_built):
    preview = demo_built.materialized["metadata"][PROFILES_MODEL]["preview"].value
    assert len(preview.records) == PREVIEW_ROWS
    first = preview.records[0].data
    ((user_id, full_name),) = warehouse_rows(
        demo_built.warehouse_path, "select user_id, full_name from customer_profiles limit 1"
    )
    assert (first["user_id"], first["full_name"]) == (user_id, full_name)
    assert isinstance(first["lifetime_value"], float)
    cells = [value for record in preview.records for value in record.data.values() if isinstance(value, str)]
    assert max(len(cell) for cell in cells) <= PREVIEW_CELL_CHARS
    assert first["summary_90d"].startswith('{"num_songs_listened":')
    assert any(cell.endswith("…") for cell in cells)  # the long ones are cut, not dropped


def test_postgres_models_show_the_types_postgres_names(postgres_url):
    import sqlalchemy as sa

    warehouse = Warehouse(postgres_url)
    try:
        with warehouse.engine.begin() as conn:
            conn.execute(sa.text(
                "create table people (id integer, spent numeric(10,2), seen timestamptz, tags text[], extra jsonb)"
            ))
        types = warehouse_column_types(warehouse, "select * from people")
    finally:
        warehouse.dispose()
    assert types == {"id": "INT4", "spent": "NUMERIC(10,2)", "seen": "TIMESTAMPTZ", "tags": "TEXT[]", "extra": "JSONB"}


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
    key = dg.AssetKey(["model", "people_sql_model"])
    result = dg.materialize([defs.resolve_assets_def(key)])
    model = defs.resolve_asset_graph().get(key)
    assert model.parent_keys == set()
    assert "select * from users" in model.description
    (event,) = result.get_asset_materialization_events()
    metadata = event.step_materialization_data.materialization.metadata
    assert metadata["dagster/row_count"].value == 1
    assert [(c.name, c.type) for c in metadata["dagster/column_schema"].value.columns] == [
        ("user_id", "INTEGER"), ("name", "VARCHAR")
    ]
