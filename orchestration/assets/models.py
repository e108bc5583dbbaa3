"""One asset per model a sync reads: its row count, column schema and a 100-row preview."""


import dagster as dg

from orchestration.assets.dbt import dbt_model_key
from orchestration.config.load import Project
from orchestration.config.specs import SyncSpec
from orchestration.resources import LarderResource
from orchestration.sync.mapping import encode_fields

MODEL_KEY_PREFIX = "model"
PREVIEW_ROWS = 100


def model_name(spec: SyncSpec) -> str:
    """dbt models keep their name; inline SQL models are named after their sync."""
    return spec.model.dbt if spec.model.dbt is not None else f"{spec.name}_sql"


def model_key(spec: SyncSpec) -> dg.AssetKey:
    return dg.AssetKey([MODEL_KEY_PREFIX, model_name(spec)])


def build_model_assets(project: Project, automation: dict[str, dg.AutomationCondition | None]) -> list[dg.AssetsDefinition]:
    built: dict[str, dg.AssetsDefinition] = {}
    for declared in project.syncs:
        spec = declared.spec
        name = model_name(spec)
        if name not in built:
            built[name] = _model_asset(project, spec, automation.get(name))
    return list(built.values())


def _model_asset(project: Project, spec: SyncSpec, condition: dg.AutomationCondition | None) -> dg.AssetsDefinition:
    deps = [dbt_model_key(spec.model.dbt)] if spec.model.dbt is not None else []
    description = (
        project.dbt_model(spec.model.dbt).description or f"dbt model {spec.model.dbt}"
        if spec.model.dbt is not None
        else f"Inline SQL model of sync {spec.name}:\n\n```sql\n{spec.model.sql}\n```"
    )
    sql = project.model_sql(spec)

    @dg.asset(
        key=model_key(spec),
        deps=deps,
        group_name="models",
        description=description,
        kinds={"sql"},
        automation_condition=condition,
        pool="warehouse",
    )
    def model_asset(context: dg.AssetExecutionContext, larder: LarderResource) -> dg.MaterializeResult:
        with larder.services() as services:
            warehouse = services.warehouse
            rows = warehouse.count(sql)
            preview = warehouse.preview(sql, PREVIEW_ROWS)
            columns = warehouse.columns(sql)
        return dg.MaterializeResult(
            metadata={
                "dagster/row_count": rows,
                "dagster/column_schema": dg.TableSchema(
                    columns=[dg.TableColumn(name=c, type=_type_of(preview, c)) for c in columns]
                ),
                "preview": dg.MetadataValue.json([_jsonable(row) for row in preview]),
            }
        )

    return model_asset


def _type_of(rows: list[dict], column: str) -> str:
    for row in rows:
        if row.get(column) is not None:
            return type(row[column]).__name__
    return "unknown"


def _jsonable(row: dict) -> dict:
    import orjson

    return orjson.loads(encode_fields(row))
