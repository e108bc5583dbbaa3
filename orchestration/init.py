"""`larder init --dbt-project PATH [--dir DIR]`: a working Larder project for an existing dbt project.

It reads the dbt profile and target to write larder.yaml (the warehouse Larder reads is the one
dbt builds into; a DuckDB file's relative path is resolved against the dbt project, as dbt does),
runs `dbt parse` so the manifest exists, and picks an example model from it: the model with a
column dbt tests as unique and not null (its primary index) and the most documented columns. It
writes, under DIR:

    larder.yaml             warehouse, state, runtime folder, one region, the dbt project
    syncs/<model>.yaml      an example sync in file form (with a Liquid field)
    dbt_meta_example.yml    the same kind of sync declared in dbt meta, to paste into schema.yml
    dagster.yaml            the Dagster instance `larder up` runs with
    .gitignore              the runtime folder, .larder/

Running it again changes nothing that exists (each file is kept unless --force) and parses again.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import yaml

from orchestration.config.load import ConfigError, load_project
from orchestration.machine import executable

DEFAULT_INSTANCE = Path(__file__).resolve().parent / "dagster.yaml"
REGION = "main"
# Away from the demo's (8080-8081, 11311-11312) so both run side by side.
DEFAULT_API_PORT = 8090
DEFAULT_MEMCACHED_PORT = 11411
# `{{ env_var('NAME') }}` or `{{ env_var("NAME", "default") }}`, dbt's way of reading the environment.
ENV_VAR = re.compile(r"""\{\{\s*env_var\(\s*['"]([A-Za-z_][A-Za-z0-9_]*)['"]\s*(?:,\s*['"]([^'"]*)['"]\s*)?\)\s*\}\}""")
STAGING_PREFIXES = ("stg_", "base_", "int_", "raw_")
IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class InitError(Exception):
    """Why a Larder project cannot be written for this dbt project; the message says what to do."""


@dataclass(frozen=True)
class DbtTarget:
    project_dir: Path
    profiles_dir: Path
    profile: str
    target: str
    output: dict[str, Any]


@dataclass(frozen=True)
class ExampleModel:
    name: str
    key: str  # a column dbt tests unique and not_null
    columns: tuple[str, ...]
    properties_file: str  # where the model's properties (schema.yml) are, if anywhere

    @property
    def collection(self) -> str:
        return re.sub(r"[^A-Za-z0-9]", "", self.name)[:64] or "records"


def init_project(dbt_project: Path, directory: Path, *, profiles_dir: Path | None = None, target: str | None = None,
                 force: bool = False) -> int:
    """Write the project, parse the dbt project, check the result loads and print the next commands."""
    directory = directory.resolve()
    dbt = read_dbt_target(dbt_project, profiles_dir=profiles_dir, target=target)
    warehouse = warehouse_url(dbt)
    manifest = parse_dbt_project(dbt)
    models = example_models(manifest)
    files = {
        directory / "larder.yaml": larder_yaml(dbt, warehouse, directory),
        directory / "dagster.yaml": DEFAULT_INSTANCE.read_text(),
        directory / ".gitignore": "# Larder's runtime folder: state, logs, pid files, the Dagster instance.\n.larder/\n",
    }
    if models:
        files[directory / "syncs" / f"{models[0].name}.yaml"] = file_sync(models[0])
        files[directory / "dbt_meta_example.yml"] = dbt_meta_sync(models[1] if len(models) > 1 else models[0],
                                                                  distinct=len(models) > 1)
    for path, text in files.items():
        _write(path, text, force=force)
    (directory / ".larder").mkdir(exist_ok=True)  # the default runtime folder: the SQLite state goes there
    try:
        project = load_project(directory / "larder.yaml")
    except ConfigError as error:
        raise InitError(f"the project written in {directory} does not load (edit it, or rerun with --force):\n{error}") from error
    _print_next_steps(dbt, directory, project, models)
    return 0


# --- the dbt profile --------------------------------------------------------------------------------


def read_dbt_target(dbt_project: Path, *, profiles_dir: Path | None, target: str | None) -> DbtTarget:
    """The dbt project's profile output for the target dbt would use."""
    project_dir = dbt_project.resolve()
    project_file = project_dir / "dbt_project.yml"
    if not project_file.exists():
        raise InitError(f"{project_dir} is not a dbt project: it has no dbt_project.yml")
    profile = (_read_yaml(project_file) or {}).get("profile")
    if not profile:
        raise InitError(f"{project_file}: no `profile:`; Larder reads the warehouse from the dbt profile")
    profiles_dir = _profiles_dir(project_dir, profiles_dir)
    profiles = _read_yaml(profiles_dir / "profiles.yml") or {}
    if profile not in profiles:
        raise InitError(f"{profiles_dir / 'profiles.yml'}: no profile {profile!r} (the one {project_file} names)")
    entry = profiles[profile] or {}
    target = target or os.environ.get("DBT_TARGET") or _render(str(entry.get("target", "")))
    outputs = entry.get("outputs") or {}
    if target not in outputs:
        raise InitError(f"{profiles_dir / 'profiles.yml'}: profile {profile!r} has no target {target!r} "
                        f"(targets: {', '.join(outputs) or 'none'})")
    return DbtTarget(project_dir, profiles_dir, profile, target, outputs[target])


def _profiles_dir(project_dir: Path, given: Path | None) -> Path:
    """Where dbt would look: --profiles-dir, $DBT_PROFILES_DIR, the project folder, then ~/.dbt."""
    candidates = [given] if given else [
        *([Path(os.environ["DBT_PROFILES_DIR"])] if os.environ.get("DBT_PROFILES_DIR") else []),
        project_dir,
        Path.home() / ".dbt",
    ]
    for candidate in candidates:
        if (candidate / "profiles.yml").exists():
            return candidate.resolve()
    raise InitError(f"no profiles.yml in {', '.join(map(str, candidates))}; pass --profiles-dir")


def warehouse_url(dbt: DbtTarget) -> str:
    """A SQLAlchemy URL for the warehouse dbt builds into; `env_var(...)` becomes `${VAR}` / `${VAR:-default}`."""
    output = dbt.output
    kind = output.get("type")
    if kind == "duckdb":
        return _duckdb_url(dbt)
    if kind in ("postgres", "redshift"):
        if kind == "redshift":
            raise InitError(f"profile {dbt.profile!r}, target {dbt.target!r}: Larder reads DuckDB and Postgres "
                            "warehouses, not Redshift")
        return _postgres_url(output)
    raise InitError(f"profile {dbt.profile!r}, target {dbt.target!r} is a {kind!r} warehouse; Larder reads DuckDB "
                    "and Postgres warehouses (set warehouse.url in larder.yaml by hand for another SQLAlchemy one)")


def _duckdb_url(dbt: DbtTarget) -> str:
    path = str(dbt.output.get("path") or "")
    if not path or path == ":memory:" or path.startswith("md:"):
        raise InitError(f"profile {dbt.profile!r}, target {dbt.target!r}: the DuckDB database {path or ':memory:'!r} "
                        "is not a file Larder can read; give the target a `path:`")
    match = ENV_VAR.fullmatch(path.strip())
    if match:
        name, default = match.groups()
        default = str(_resolve(dbt.project_dir, default)) if default else None
        return f"duckdb:///${{{name}{':-' + default if default else ''}}}"
    if "{{" in path:
        raise InitError(f"profile {dbt.profile!r}, target {dbt.target!r}: cannot read the DuckDB path {path!r}; "
                        "set warehouse.url in larder.yaml by hand")
    return f"duckdb:///{_resolve(dbt.project_dir, path)}"


def _resolve(base: Path, path: str) -> Path:
    """A DuckDB path as dbt opens it: relative to the dbt project (where dbt and Dagster run dbt)."""
    candidate = Path(path).expanduser()
    return candidate if candidate.is_absolute() else (base / candidate).resolve()


def _postgres_url(output: dict[str, Any]) -> str:
    def part(name: str, default: str = "") -> str:
        value = output.get(name, default)
        text = _render(str(value)) if value is not None else default
        return text if text.startswith("${") else quote(text, safe="")

    user, password = part("user"), part("password") if output.get("password") not in (None, "") else ""
    host, port = part("host", "localhost"), part("port", "5432")
    database = part("dbname") if output.get("dbname") else part("database")
    credentials = user + (f":{password}" if password else "")
    return f"postgresql+psycopg://{credentials}@{host}:{port}/{database}"


def _render(text: str) -> str:
    """dbt's `{{ env_var('X', 'd') }}` as Larder's `${X:-d}` (read when Larder loads, never stored)."""
    def substitute(match: re.Match) -> str:
        name, default = match.groups()
        return f"${{{name}}}" if default is None else f"${{{name}:-{default}}}"

    rendered = ENV_VAR.sub(substitute, text)
    if "{{" in rendered or "{%" in rendered:
        raise InitError(f"cannot translate the dbt profile value {text!r}; set it in larder.yaml by hand")
    return rendered


# --- the dbt manifest -------------------------------------------------------------------------------


def parse_dbt_project(dbt: DbtTarget) -> dict[str, Any]:
    """Run `dbt parse` (the manifest Larder reads dbt models and meta syncs from) and load the manifest."""
    command = [executable("dbt"), "parse", "--quiet", "--project-dir", str(dbt.project_dir), "--profiles-dir", str(dbt.profiles_dir),
               "--target", dbt.target]
    print(f"larder: {' '.join(command[:2])} (dbt project {dbt.project_dir})", flush=True)
    result = subprocess.run(command, cwd=dbt.project_dir, capture_output=True, text=True)
    if result.returncode != 0:
        raise InitError(f"dbt parse failed:\n{(result.stdout + result.stderr).strip()[-3000:]}")
    manifest = dbt.project_dir / "target" / "manifest.json"
    if not manifest.exists():
        raise InitError(f"dbt parse wrote no {manifest}; Larder reads the manifest from target/ of the dbt project")
    return json.loads(manifest.read_text())


def example_models(manifest: dict[str, Any]) -> list[ExampleModel]:
    """Models a sync can read as they are: a tested unique, not-null column; best first (marts, most columns)."""
    tested: dict[str, dict[str, set[str]]] = {}
    for node in manifest.get("nodes", {}).values():
        meta = node.get("test_metadata") or {}
        if node.get("resource_type") == "test" and meta.get("name") in ("unique", "not_null") and node.get("column_name"):
            model = node.get("attached_node") or next(iter(node.get("depends_on", {}).get("nodes", [])), None)
            if model:
                tested.setdefault(model, {}).setdefault(node["column_name"], set()).add(meta["name"])
    models = []
    for unique_id, node in manifest.get("nodes", {}).items():
        if node.get("resource_type") != "model" or node.get("config", {}).get("materialized") == "ephemeral":
            continue
        keys = [column for column, tests in tested.get(unique_id, {}).items() if tests == {"unique", "not_null"}]
        columns = tuple(node.get("columns", {}))
        key = next((c for c in columns if c in keys), keys[0] if keys else None)
        if key is None:
            continue
        models.append(ExampleModel(node["name"], key, columns if key in columns else (key, *columns),
                                   (node.get("patch_path") or "").split("://")[-1]))
    models.sort(key=lambda m: (m.name.startswith(STAGING_PREFIXES), -len(m.columns), m.name))
    return _distinct_collections(models)


def _distinct_collections(models: list[ExampleModel]) -> list[ExampleModel]:
    seen, distinct = set(), []
    for model in models:
        if model.collection not in seen:
            seen.add(model.collection)
            distinct.append(model)
    return distinct


# --- the files --------------------------------------------------------------------------------------


def larder_yaml(dbt: DbtTarget, warehouse: str, directory: Path) -> str:
    project_dir = os.path.relpath(dbt.project_dir, directory)
    dbt_lines = [f"  project_dir: {_yaml_text(project_dir)}"]
    if dbt.profiles_dir != dbt.project_dir:
        dbt_lines.append(f"  profiles_dir: {_yaml_text(str(dbt.profiles_dir))}")
    dbt_lines.append(f"  target: {_yaml_text(dbt.target)}")
    return f"""\
# Larder project for the dbt project {dbt.project_dir.name} (written by `larder init`).
# ${{VAR}} and ${{VAR:-default}} read the environment. ${{LARDER_HOME}} is the runtime folder:
# .larder/ beside this file unless LARDER_HOME is set.

# Where the models are read from: what dbt builds into (profile {dbt.profile}, target {dbt.target}).
warehouse:
  url: {_yaml_text(warehouse)}

# Durable state: every synced record, run history and API keys. SQLite on one machine;
# LARDER_STATE_URL=postgresql+psycopg://... in a deployment.
state:
  url: ${{LARDER_STATE_URL:-sqlite:///${{LARDER_HOME}}/state.db}}

# The dbt project: its manifest (target/manifest.json, `dbt parse`) supplies dbt models and the
# syncs declared in models' meta.
dbt:
{chr(10).join(dbt_lines)}

# One region: a Memcached pool and the API that serves it (`larder serve --region {REGION}`).
# `larder up` starts a local memcached for 127.0.0.1 servers. Add regions as you deploy them.
regions:
  {REGION}:
    servers: ["127.0.0.1:${{LARDER_MEMCACHED_PORT:-{DEFAULT_MEMCACHED_PORT}}}"]
    port: ${{LARDER_API_PORT:-{DEFAULT_API_PORT}}}

# Collections need no declaration (each sync names its own); describe them here if you like.
collections: {{}}

# Sync files, relative to this file.
syncs:
  - syncs/*.yaml
"""


def file_sync(model: ExampleModel) -> str:
    others = [c for c in model.columns if c != model.key]
    fields = "\n".join(f"  - column: {_yaml_text(c)}" for c in (model.key, *others))
    liquid = ""
    readable = [c for c in others if IDENTIFIER.fullmatch(c)]
    if IDENTIFIER.fullmatch(model.key) and readable:
        target = next(name for name in ("summary", "larder_summary", "example_summary") if name not in model.columns)
        liquid = f"""
  # A Liquid transform (python-liquid; columns are variables), typed. In a sync file Liquid is
  # written as it is; in dbt meta it needs {{% raw %}} (see dbt_meta_example.yml).
  - to: {target}
    liquid: "{{{{ {model.key} }}}}: {{{{ {readable[0]} }}}}"
    type: string"""
    return f"""\
# An example sync, written by `larder init`: the dbt model {model.name} served as collection
# {model.collection}, looked up by {model.key} (dbt tests it unique and not null):
#   GET /v1/collections/{model.collection}/records/{model.key}/<value>
# Every option: "Sync files" in Larder's README.
name: {model.name}
description: Records of the dbt model {model.name}.
model:
  dbt: {model.name}
collection: {model.collection}
primary_index: {model.key}
# indices: [email]               # other top-level fields a record can be looked up by
fields:                          # select · rename and nest (`to: a.b`) · Liquid
{fields}{liquid}
delete: delete                   # rows that leave the model: keep · clear · delete
trigger:
  on_upstream_change: true       # run after dbt rebuilds the model (or: schedule: "*/15 * * * *")
"""


def dbt_meta_sync(model: ExampleModel, *, distinct: bool) -> str:
    collection = model.collection if distinct else f"{model.collection}meta"
    name = model.name if distinct else f"{model.name}_meta"
    others = [c for c in model.columns if c != model.key][:3]
    fields = "\n".join(f"#                 - column: {c}" for c in (model.key, *others))
    liquid = ""
    if IDENTIFIER.fullmatch(model.key):
        target = next(name for name in ("label", "larder_label", "example_label") if name not in model.columns)
        liquid = (f"\n#                 - to: {target}\n"
                  f"#                   liquid: \"{{% raw %}}{model.name} {{{{ {model.key} }}}}{{% endraw %}}\"")
    where = model.properties_file or "a properties file (models/schema.yml)"
    return f"""\
# A sync declared in dbt meta, written by `larder init`. Larder does not read this file: paste the
# `config:` block under the model {model.name} in {where},
# run `dbt parse`, and the running API and Dagster pick the new sync up by themselves.
#
# dbt renders Jinja in schema.yml, meta included: a Liquid template there is wrapped in
# {{% raw %}}…{{% endraw %}} so that it reaches Larder as written (a sync file needs no wrapping).
#
# models:
#   - name: {model.name}
#     config:
#       meta:
#         larder:
#           syncs:
#             - name: {name}
#               collection: {collection}
#               primary_index: {model.key}
#               fields:
{fields}{liquid}
#               delete: clear
#               trigger: {{on_upstream_change: true}}
"""


def _write(path: Path, text: str, *, force: bool) -> None:
    if path.exists() and not force:
        print(f"  kept    {path} (exists; --force overwrites it)")
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    existed = path.exists()
    path.write_text(text)
    print(f"  {'rewrote' if existed else 'wrote  '} {path}")


def _print_next_steps(dbt: DbtTarget, directory: Path, project, models: list[ExampleModel]) -> None:
    config = directory / "larder.yaml"
    region = project.regions[project.enabled_regions[0]]
    lines = [
        "",
        f"Larder project ready in {directory} ({len(project.syncs)} sync{'s' if len(project.syncs) != 1 else ''}).",
        "",
        "Next:",
        f"  export LARDER_CONFIG={config}     # or pass --config to every larder command",
        f"  larder up                         # memcached, dbt build, every sync, the API on {region.host}:{region.port}"
        " and the Dagster UI",
        "",
        "or step by step:",
        f"  dbt build --project-dir {dbt.project_dir} --profiles-dir {dbt.profiles_dir}",
        "  larder validate                   # configuration and mapped columns against the warehouse",
        "  larder sync                       # run every sync once",
        "  larder keys create --name local   # an API key",
        f"  larder serve --region {REGION}        # the API",
    ]
    if models:
        model = models[0]
        lines += [
            f"  curl -H 'Authorization: Bearer <key>' http://{region.host}:{region.port}"
            f"/v1/collections/{model.collection}/records/{model.key}/<value>",
            "",
            f"To declare a sync in dbt meta instead, see {directory / 'dbt_meta_example.yml'}.",
        ]
    else:
        lines += ["", "No model has a column dbt tests as unique and not null: write a sync file in "
                  f"{directory / 'syncs'} (see \"Sync files\" in Larder's README)."]
    print("\n".join(lines), flush=True)


def _read_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text())
    except OSError as error:
        raise InitError(f"{path}: cannot read: {error.strerror}") from None
    except yaml.YAMLError as error:
        raise InitError(f"{path}: invalid YAML: {error}") from None


def _yaml_text(value: str) -> str:
    """A YAML scalar for `value`, quoted only when it needs to be."""
    return yaml.safe_dump(value, default_flow_style=True, width=10_000).strip().removesuffix("\n...").strip()
