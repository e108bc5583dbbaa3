"""The dbt project as Dagster assets, keyed `dbt/<model>`."""

# No `from __future__ import annotations`: Dagster reads the context and resource annotations.

import os
import sys
from pathlib import Path
from typing import Any, Mapping

import dagster as dg
from dagster_dbt import DagsterDbtTranslator, DbtCliResource, DbtProject, dbt_assets

from orchestration.config.load import Project

DBT_KEY_PREFIX = "dbt"


class LarderDbtTranslator(DagsterDbtTranslator):
    def get_asset_spec(self, manifest: Mapping[str, Any], unique_id: str, project: DbtProject | None) -> dg.AssetSpec:
        spec = super().get_asset_spec(manifest, unique_id, project)
        return spec.replace_attributes(key=spec.key.with_prefix(DBT_KEY_PREFIX), group_name="dbt")


def dbt_model_key(model_name: str) -> dg.AssetKey:
    return dg.AssetKey([DBT_KEY_PREFIX, model_name])


def dbt_project_of(project: Project) -> DbtProject | None:
    if project.spec.dbt is None:
        return None
    _export_warehouse_path(project)
    dbt = DbtProject(
        project_dir=project.spec.dbt.project_dir,
        profiles_dir=project.spec.dbt.profiles_dir,
        target=project.spec.dbt.target,
    )
    dbt.prepare_if_dev()
    return dbt


def build_dbt_assets(dbt: DbtProject) -> dg.AssetsDefinition:
    @dbt_assets(manifest=dbt.manifest_path, project=dbt, dagster_dbt_translator=LarderDbtTranslator())
    def larder_dbt_models(context: dg.AssetExecutionContext, dbt_cli: DbtCliResource):
        yield from dbt_cli.cli(["build"], context=context).stream()

    return larder_dbt_models


def dbt_resource(dbt: DbtProject) -> DbtCliResource:
    return DbtCliResource(project_dir=dbt, dbt_executable=_dbt_executable())


def _dbt_executable() -> str:
    beside_python = Path(sys.executable).with_name("dbt")
    return str(beside_python) if beside_python.exists() else "dbt"


def _export_warehouse_path(project: Project) -> None:
    """dbt's profile reads LARDER_WAREHOUSE_PATH: point it at the file Larder's warehouse URL names."""
    url = project.spec.warehouse.url
    if url.startswith("duckdb:///"):
        os.environ["LARDER_WAREHOUSE_PATH"] = str(Path(url.removeprefix("duckdb:///")).resolve())
