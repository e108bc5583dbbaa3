"""The dbt project as Dagster assets, keyed `dbt/<node>`, and what the Larder assets read from it."""

# No `from __future__ import annotations`: Dagster reads the context and resource annotations.

import json
import os
import shutil
import sys
import tempfile
from collections.abc import Mapping
from functools import cached_property
from importlib.metadata import version as installed_version
from pathlib import Path
from typing import Any

import dagster as dg
from dagster_dbt import DagsterDbtTranslator, DbtCliInvocation, DbtCliResource, DbtProject, dbt_assets
from packaging import version

from orchestration.assets.keys import DBT_KEY_PREFIX
from orchestration.config.load import Project
from orchestration.machine import executable

DBT_GROUP = "dbt"
PARTIAL_PARSE = "partial_parse.msgpack"
# The dbt var the demo's profile reads its DuckDB file from (see profiles.yml).
WAREHOUSE_PATH_VAR = "larder_warehouse_path"


class LarderDbtTranslator(DagsterDbtTranslator):
    def get_asset_spec(self, manifest: Mapping[str, Any], unique_id: str, project: DbtProject | None) -> dg.AssetSpec:
        spec = super().get_asset_spec(manifest, unique_id, project)
        return spec.replace_attributes(key=spec.key.with_prefix(DBT_KEY_PREFIX), group_name=DBT_GROUP)

    def get_description(self, dbt_resource_props: Mapping[str, Any]) -> str:
        # A seed has no SQL: dagster-dbt's default would show an empty "Raw SQL" block under it.
        if dbt_resource_props["resource_type"] == "seed":
            return dbt_resource_props.get("description") or (
                f"dbt seed {dbt_resource_props['name']}: the rows of {dbt_resource_props['original_file_path']}."
            )
        return super().get_description(dbt_resource_props)


def dbt_project_of(project: Project) -> DbtProject | None:
    if project.spec.dbt is None:
        return None
    dbt = DbtProject(
        project_dir=project.spec.dbt.project_dir,
        profiles_dir=project.spec.dbt.profiles_dir,
        target=project.spec.dbt.target,
    )
    dbt.prepare_if_dev()
    return dbt


class LarderDbtCliResource(DbtCliResource):
    """dagster-dbt's resource, without the work Larder never uses on every run's critical path.

    Each run's resource would run `dbt --version` in a subprocess (1.5-3.5 s on 2 busy cores) and
    load the project into a dbt adapter in-process (about 1 s) that dagster-dbt only needs to fetch
    row counts and column metadata, which Larder's own model assets report.
    """

    @cached_property
    def _cli_version(self) -> version.Version:
        if Path(self.dbt_executable) == Path(sys.executable).with_name("dbt"):
            return version.parse(installed_version("dbt-core"))  # the dbt beside this Python
        return super()._cli_version

    def _initialize_dbt_core_adapter(self, args):
        return None


def build_dbt_assets(project: Project, dbt: DbtProject) -> dg.AssetsDefinition:
    build = ["build", *warehouse_vars(project)]

    @dbt_assets(manifest=dbt.manifest_path, project=dbt, dagster_dbt_translator=LarderDbtTranslator())
    def larder_dbt_models(context: dg.AssetExecutionContext, dbt_cli: DbtCliResource):
        invocation = dbt_cli.cli(build, context=context)
        try:
            yield from invocation.stream()
        finally:
            _keep_partial_parse(invocation, Path(dbt.project_dir) / "target")

    return larder_dbt_models


def dbt_resource(dbt: DbtProject) -> DbtCliResource:
    return LarderDbtCliResource(project_dir=dbt, dbt_executable=executable("dbt"))


def _keep_partial_parse(invocation: DbtCliInvocation, target: Path) -> None:
    """Hand this run's parse to the next run: dagster-dbt starts each run from target/'s copy, which
    otherwise stays the one `make manifest` wrote, made with another environment, so every run
    would parse the whole project again (1.5 s of a dbt build on 2 busy cores)."""
    fresh = invocation.target_path / PARTIAL_PARSE
    if not fresh.exists():
        return
    with fresh.open("rb") as source, tempfile.NamedTemporaryFile(dir=target, prefix=PARTIAL_PARSE, delete=False) as copy:
        shutil.copyfileobj(source, copy)
    os.replace(copy.name, target / PARTIAL_PARSE)  # atomic: a run starting now reads one whole file


def dbt_column_descriptions(dbt: DbtProject | None) -> dict[str, dict[str, str]]:
    """dbt model name → its documented columns → their descriptions, from the manifest."""
    if dbt is None:
        return {}
    manifest = json.loads(Path(dbt.manifest_path).read_text())
    return {
        node["name"]: {name: column.get("description", "") for name, column in node.get("columns", {}).items()}
        for node in manifest.get("nodes", {}).values()
        if node.get("resource_type") == "model"
    }


def dbt_tests_upstream_of(dbt_assets_def: dg.AssetsDefinition | None, key: dg.AssetKey) -> tuple[dg.AssetCheckKey, ...]:
    """The dbt tests on a dbt asset and on every dbt asset it is built from, as check keys."""
    if dbt_assets_def is None:
        return ()
    upstream = {key}
    stack = [key]
    while stack:
        for parent in dbt_assets_def.asset_deps.get(stack.pop(), ()):
            if parent not in upstream:
                upstream.add(parent)
                stack.append(parent)
    return tuple(sorted(
        (check for check in dbt_assets_def.check_keys if check.asset_key in upstream),
        key=lambda check: (check.asset_key.to_user_string(), check.name),
    ))


def warehouse_vars(project: Project) -> list[str]:
    """`--vars` telling dbt the DuckDB file Larder's warehouse URL names (the profile reads the
    `larder_warehouse_path` var), so dbt writes where the syncs read; none for other warehouses."""
    url = project.spec.warehouse.url
    if not url.startswith("duckdb:///"):
        return []
    path = Path(url.removeprefix("duckdb:///")).resolve()
    return ["--vars", json.dumps({WAREHOUSE_PATH_VAR: str(path)})]
