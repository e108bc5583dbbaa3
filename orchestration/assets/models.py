"""One asset per model a sync reads: its row count, its columns (warehouse types, dbt descriptions),
a preview that fits the page, and the checks of every sync reading it.

The checks run in the model's own step, so in any run they are decided before a sync reading the
model starts; the sync then holds itself back when a check it is blocked by failed (assets/gate.py).
"""

# No `from __future__ import annotations`: Dagster reads the context and resource annotations.

from datetime import date, datetime, time
from decimal import Decimal
from typing import Any

import dagster as dg
import orjson

from orchestration.assets.checks import check_results, check_specs
from orchestration.assets.keys import dbt_model_key, model_key, model_name
from orchestration.config.load import Project
from orchestration.config.specs import SyncSpec
from orchestration.sync.mapping import json_default
from orchestration.sync.warehouse import Warehouse

# Enough rows to see what the data looks like, few enough for the asset page.
PREVIEW_ROWS = 10
PREVIEW_CELL_CHARS = 60
# A model read by syncs of several collections belongs to none of their groups.
SHARED_MODELS_GROUP = "models"


def build_model_assets(
    project: Project,
    automation: dict[dg.AssetKey, dg.AutomationCondition],
    dbt_columns: dict[str, dict[str, str]],
) -> list[dg.AssetsDefinition]:
    """One asset per distinct model, downstream of its dbt model when it is one.

    `dbt_columns` is dbt model name → column → its description in the dbt project.
    """
    readers: dict[dg.AssetKey, list[SyncSpec]] = {}
    for declared in project.syncs:
        readers.setdefault(model_key(declared.spec), []).append(declared.spec)
    return [
        _model_asset(project, specs, automation.get(key), dbt_columns.get(specs[0].model.dbt or "", {}))
        for key, specs in readers.items()
    ]


def _model_asset(
    project: Project,
    readers: list[SyncSpec],
    condition: dg.AutomationCondition | None,
    descriptions: dict[str, str],
) -> dg.AssetsDefinition:
    spec = readers[0]
    sql = project.model_sql(spec)
    collections = {reader.collection for reader in readers}
    warehouse_kind = project.spec.warehouse.url.split(":", 1)[0].split("+", 1)[0]

    @dg.asset(
        key=model_key(spec),
        deps=[dbt_model_key(spec.model.dbt)] if spec.model.dbt is not None else [],
        group_name=collections.pop() if len(collections) == 1 else SHARED_MODELS_GROUP,
        description=_description(project, spec, readers),
        owners=sorted({owner for reader in readers for owner in reader.owners}),
        kinds={"sql", "postgres" if warehouse_kind == "postgresql" else warehouse_kind},
        tags={"larder/model": model_name(spec)},
        metadata={
            "read_by": dg.MetadataValue.json([reader.name for reader in readers]),
            **({"dagster/column_schema": _described_schema(descriptions)} if descriptions else {}),
        },
        check_specs=[check for reader in readers for check in check_specs(reader)],
        automation_condition=condition,
        pool="warehouse",
    )
    def model_asset(context: dg.AssetExecutionContext, warehouse: dg.ResourceParam[Warehouse]) -> dg.MaterializeResult:
        rows = warehouse.count(sql)
        types = warehouse_column_types(warehouse, sql)
        preview = warehouse.preview(sql, PREVIEW_ROWS)
        checks = [result for reader in readers for result in check_results(project, reader, warehouse)]
        context.log.info(f"model {model_name(spec)}: {rows} rows, {len(types)} columns")
        return dg.MaterializeResult(
            metadata={
                "dagster/row_count": rows,
                "dagster/column_schema": _schema(types, descriptions),
                "preview": dg.MetadataValue.table(
                    records=[dg.TableRecord(_flat(row)) for row in preview], schema=_flat_schema(list(types))
                ),
            },
            check_results=checks,
        )

    return model_asset


def warehouse_column_types(warehouse: Warehouse, sql: str) -> dict[str, str]:
    """The model's columns → their type as the warehouse names it (`DECIMAL(18,2)`, `NUMERIC(10,2)`)."""
    return warehouse.column_types(sql)


def _schema(types: dict[str, str], descriptions: dict[str, str]) -> dg.TableSchema:
    return dg.TableSchema(
        columns=[dg.TableColumn(name=name, type=kind, description=descriptions.get(name)) for name, kind in types.items()]
    )


def _described_schema(descriptions: dict[str, str]) -> dg.TableSchema:
    """Before the first run: the columns the dbt project documents (types come with a run)."""
    return dg.TableSchema(
        columns=[dg.TableColumn(name=name, type="", description=text) for name, text in descriptions.items()]
    )


def _description(project: Project, spec: SyncSpec, readers: list[SyncSpec]) -> str:
    if spec.model.dbt is not None:
        about = project.dbt_model(spec.model.dbt).description.strip() or f"dbt model {spec.model.dbt}"
    else:
        about = f"Inline SQL model of sync {spec.name}:\n\n```sql\n{spec.model.sql.strip()}\n```"
    return f"{about}\n\nRead by sync(s): {', '.join(reader.name for reader in readers)}."


def _flat_schema(columns: list[str]) -> dg.TableSchema:
    return dg.TableSchema(columns=[dg.TableColumn(name=c) for c in columns])


def _flat(row: dict[str, Any]) -> dict[str, Any]:
    """A preview row the UI's table can show: scalars as they are, nested values as short JSON text."""
    return {column: _cell(value) for column, value in row.items()}


def _cell(value: Any) -> str | int | float | bool | None:
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, (datetime, date, time)):
        return value.isoformat()
    text = value if isinstance(value, str) else orjson.dumps(value, default=json_default).decode()
    return text if len(text) <= PREVIEW_CELL_CHARS else text[: PREVIEW_CELL_CHARS - 1] + "…"
