"""One asset per model a sync reads: its row count, column schema and a 100-row preview."""

# No `from __future__ import annotations`: Dagster reads the context and resource annotations.

from datetime import date, datetime, time
from decimal import Decimal
from typing import Any

import dagster as dg
import orjson

from orchestration.assets.dbt import dbt_model_key
from orchestration.config.load import Project
from orchestration.config.specs import SyncSpec
from orchestration.resources import LarderResource
from orchestration.sync.mapping import json_default

MODEL_KEY_PREFIX = "model"
PREVIEW_ROWS = 100
# A model read by syncs of several collections belongs to none of their groups.
SHARED_MODELS_GROUP = "models"


def model_name(spec: SyncSpec) -> str:
    """dbt models keep their name; inline SQL models are named after their sync."""
    return spec.model.dbt if spec.model.dbt is not None else f"{spec.name}_sql"


def model_key(spec: SyncSpec) -> dg.AssetKey:
    return dg.AssetKey([MODEL_KEY_PREFIX, model_name(spec)])


def build_model_assets(project: Project, automation: dict[dg.AssetKey, dg.AutomationCondition]) -> list[dg.AssetsDefinition]:
    """One asset per distinct model, downstream of its dbt model when it is one."""
    readers: dict[dg.AssetKey, list[SyncSpec]] = {}
    for declared in project.syncs:
        readers.setdefault(model_key(declared.spec), []).append(declared.spec)
    return [_model_asset(project, specs, automation.get(key)) for key, specs in readers.items()]


def _model_asset(project: Project, readers: list[SyncSpec], condition: dg.AutomationCondition | None) -> dg.AssetsDefinition:
    spec = readers[0]
    sql = project.model_sql(spec)
    collections = {reader.collection for reader in readers}

    @dg.asset(
        key=model_key(spec),
        deps=[dbt_model_key(spec.model.dbt)] if spec.model.dbt is not None else [],
        group_name=collections.pop() if len(collections) == 1 else SHARED_MODELS_GROUP,
        description=_description(project, spec, readers),
        owners=sorted({owner for reader in readers for owner in reader.owners}),
        kinds={"sql"},
        tags={"larder/model": model_name(spec)},
        automation_condition=condition,
        pool="warehouse",
    )
    def model_asset(context: dg.AssetExecutionContext, larder: LarderResource) -> dg.MaterializeResult:
        with larder.services() as services:
            warehouse = services.warehouse
            rows = warehouse.count(sql)
            preview = warehouse.preview(sql, PREVIEW_ROWS)
            columns = warehouse.columns(sql)
        context.log.info(f"model {model_name(spec)}: {rows} rows, {len(columns)} columns")
        schema = dg.TableSchema(columns=[dg.TableColumn(name=c, type=_type_of(preview, c)) for c in columns])
        return dg.MaterializeResult(
            metadata={
                "dagster/row_count": rows,
                "dagster/column_schema": schema,
                "preview": dg.MetadataValue.table(
                    records=[dg.TableRecord(_flat(row)) for row in preview], schema=_flat_schema(columns)
                ),
            }
        )

    return model_asset


def _description(project: Project, spec: SyncSpec, readers: list[SyncSpec]) -> str:
    if spec.model.dbt is not None:
        about = project.dbt_model(spec.model.dbt).description.strip() or f"dbt model {spec.model.dbt}"
    else:
        about = f"Inline SQL model of sync {spec.name}:\n\n```sql\n{spec.model.sql.strip()}\n```"
    return f"{about}\n\nRead by sync(s): {', '.join(reader.name for reader in readers)}."


def _type_of(rows: list[dict], column: str) -> str:
    """The Python type the warehouse driver returns for the column (first non-null value)."""
    for row in rows:
        if row.get(column) is not None:
            return type(row[column]).__name__
    return "unknown"


def _flat_schema(columns: list[str]) -> dg.TableSchema:
    return dg.TableSchema(columns=[dg.TableColumn(name=c) for c in columns])


def _flat(row: dict[str, Any]) -> dict[str, Any]:
    """A preview row the UI's table can show: scalars as they are, nested values as JSON text."""
    return {column: _scalar(value) for column, value in row.items()}


def _scalar(value: Any) -> str | int | float | bool | None:
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, (datetime, date, time)):
        return value.isoformat()
    return orjson.dumps(value, default=json_default).decode()
