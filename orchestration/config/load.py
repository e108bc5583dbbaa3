"""Load larder.yaml, the sync files it names and syncs declared in dbt meta into one `Project`.

Every error names where it came from: the file (or dbt model) and the field, e.g.
`syncs/customers.yaml: fields[2].liquid: Liquid syntax error ...`.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import yaml
from pydantic import ValidationError

from orchestration.config.liquid import LiquidSyntaxError, parse_template
from orchestration.config.specs import (
    CollectionSpec,
    DeclaredSync,
    ProjectSpec,
    RegionSpec,
    SyncSource,
    SyncSpec,
)

# The default may not contain '$', '{' or '}', so the innermost reference is replaced first.
ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^${}]*))?\}")
REPO_ROOT = Path(__file__).resolve().parents[2]
DEMO_CONFIG = REPO_ROOT / "orchestration" / "larder.yaml"


class ConfigError(ValueError):
    """A configuration problem; the message starts with the file or model and the field."""


def default_config_path() -> Path:
    """`$LARDER_CONFIG`, else the project's orchestration/larder.yaml."""
    return Path(os.environ.get("LARDER_CONFIG") or DEMO_CONFIG)


def larder_home() -> Path:
    """The runtime folder (warehouse file, state, logs) of the default project; see `home_for`."""
    return home_for(default_config_path())


def home_for(config: Path) -> Path:
    """`$LARDER_HOME`, else `.larder/` beside the project's larder.yaml (the demo's: at the repository root).

    Two projects on one machine thereby keep their state, pid files and Dagster instance apart.
    """
    if os.environ.get("LARDER_HOME"):
        return Path(os.environ["LARDER_HOME"])
    config = Path(config).resolve()
    if config == DEMO_CONFIG:
        return REPO_ROOT / ".larder"
    return config.parent / ".larder"


@dataclass(frozen=True)
class DbtModelInfo:
    """What the dbt manifest says about one model, for reading it and for lineage."""

    name: str
    unique_id: str
    relation: str
    file: str
    description: str
    columns: tuple[str, ...]
    upstream: tuple[str, ...]  # unique ids of every dbt node it depends on, transitively


@dataclass(frozen=True)
class Project:
    """A loaded, validated project: settings, regions, collections and syncs."""

    path: Path
    spec: ProjectSpec
    syncs: tuple[DeclaredSync, ...]
    dbt_models: dict[str, DbtModelInfo] = field(default_factory=dict)

    @property
    def regions(self) -> dict[str, RegionSpec]:
        return self.spec.regions

    @property
    def enabled_regions(self) -> tuple[str, ...]:
        return tuple(name for name, region in self.spec.regions.items() if region.enabled)

    def sync(self, name: str) -> SyncSpec:
        for declared in self.syncs:
            if declared.spec.name == name:
                return declared.spec
        raise KeyError(f"no sync named {name!r} (known: {', '.join(self.sync_names) or 'none'})")

    @property
    def sync_names(self) -> tuple[str, ...]:
        return tuple(d.spec.name for d in self.syncs)

    def source_of(self, name: str) -> SyncSource:
        return next(d.source for d in self.syncs if d.spec.name == name)

    def syncs_for(self, collection: str) -> tuple[SyncSpec, ...]:
        return tuple(d.spec for d in self.syncs if d.spec.collection == collection)

    @property
    def collection_names(self) -> tuple[str, ...]:
        names = dict.fromkeys(d.spec.collection for d in self.syncs)
        names.update(dict.fromkeys(self.spec.collections))
        return tuple(names)

    def collection(self, name: str) -> CollectionSpec:
        return self.spec.collections.get(name, CollectionSpec())

    def indices_of(self, collection: str) -> tuple[str, ...]:
        """Every index a record of the collection can be looked up by, primary first."""
        names: dict[str, None] = {}
        for spec in self.syncs_for(collection):
            names.update(dict.fromkeys(spec.index_names))
        return tuple(names)

    def primary_index_of(self, collection: str) -> str | None:
        specs = self.syncs_for(collection)
        return specs[0].primary_index if specs else None

    def regions_of(self, spec: SyncSpec) -> tuple[str, ...]:
        """The enabled regions a sync writes."""
        wanted = spec.regions if spec.regions is not None else tuple(self.spec.regions)
        return tuple(r for r in wanted if self.spec.regions[r].enabled)

    def max_record_bytes(self, spec: SyncSpec) -> int:
        return spec.max_record_bytes or self.spec.defaults.max_record_bytes

    def model_sql(self, spec: SyncSpec) -> str:
        """The SELECT that yields the sync's rows."""
        if spec.model.sql is not None:
            return spec.model.sql
        return f"select * from {self.dbt_model(spec.model.dbt).relation}"

    def dbt_model(self, name: str) -> DbtModelInfo:
        try:
            return self.dbt_models[name]
        except KeyError:
            raise ConfigError(
                f"dbt model {name!r} is not in the dbt manifest"
                + (f" ({self.spec.dbt.manifest_path})" if self.spec.dbt else " (no dbt project configured)")
            ) from None

    def check_columns(self, spec: SyncSpec, columns: Iterable[str]) -> None:
        """Raise ConfigError naming the file and field when the mapping reads a missing column."""
        available = set(columns)
        where = self.source_of(spec.name).location
        for i, f in enumerate(spec.fields):
            if f.column is not None and f.column not in available:
                raise ConfigError(
                    f"{where}: fields[{i}].column: unknown column {f.column!r} in model "
                    f"{spec.model.name!r} (columns: {', '.join(sorted(available))})"
                )
            if f.liquid is not None:
                missing = sorted(set(parse_template(f.liquid).global_variables()) - available)
                if missing:
                    raise ConfigError(
                        f"{where}: fields[{i}].liquid: template reads unknown column(s) "
                        f"{', '.join(missing)} of model {spec.model.name!r}"
                    )


def load_project(path: str | Path | None = None) -> Project:
    """Read and validate a whole project. Raises ConfigError naming the file and field."""
    path = Path(path) if path is not None else default_config_path()
    raw = _read_yaml(path)
    spec = _validate(ProjectSpec, _interpolate(raw, path), str(path))
    spec = _resolve_paths(spec, path.parent)
    dbt_models = _read_dbt_manifest(spec)
    declared = [*_syncs_from_files(spec, path.parent), *_syncs_from_dbt_meta(spec, dbt_models)]
    project = Project(path=path, spec=spec, syncs=tuple(declared), dbt_models=dbt_models)
    _check_project(project)
    return project


def _read_yaml(path: Path) -> Any:
    try:
        text = path.read_text()
    except OSError as error:
        raise ConfigError(f"{path}: cannot read: {error.strerror}") from None
    try:
        return yaml.safe_load(text) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: invalid YAML: {error}") from None


def _interpolate(value: Any, path: Path) -> Any:
    """Replace ${VAR} and ${VAR:-default} in strings; LARDER_HOME defaults to the runtime folder."""
    if isinstance(value, dict):
        return {k: _interpolate(v, path) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, path) for v in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match) -> str:
        name, default = match.group(1), match.group(2)
        if name in os.environ:
            return os.environ[name]
        if name == "LARDER_HOME":
            return str(home_for(path))
        if default is not None:
            return default
        raise ConfigError(f"{path}: environment variable {name} is not set (referenced as ${{{name}}})")

    previous = None
    while previous != value:
        previous, value = value, ENV_REFERENCE.sub(substitute, value)
    return value


def _validate(model, data: Any, where: str, prefix: str = ""):
    try:
        return model.model_validate(data)
    except ValidationError as error:
        raise ConfigError(_describe(error, where, prefix)) from None


def _describe(error: ValidationError, where: str, prefix: str = "") -> str:
    problems = []
    for item in error.errors():
        loc = prefix + _format_loc(item["loc"])
        message = item["msg"].removeprefix("Value error, ")
        problems.append(f"{where}: {loc or '(top level)'}: {message}")
    return "\n".join(problems)


def _format_loc(loc: tuple) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        elif part in {"ScheduleTrigger", "UpstreamTrigger", "ManualTrigger"}:
            continue  # pydantic names union members; the user only wrote `trigger`
        else:
            text += ("." if text else "") + str(part)
    return text


def _resolve_paths(spec: ProjectSpec, base: Path) -> ProjectSpec:
    if spec.dbt is None:
        return spec
    dbt = spec.dbt.model_copy(
        update={
            "project_dir": (base / spec.dbt.project_dir).resolve(),
            "profiles_dir": (base / (spec.dbt.profiles_dir or spec.dbt.project_dir)).resolve(),
        }
    )
    return spec.model_copy(update={"dbt": dbt})


def _syncs_from_files(spec: ProjectSpec, base: Path) -> Iterable[DeclaredSync]:
    for pattern in spec.syncs:
        for file in sorted(base.glob(pattern)):
            raw = _read_yaml(file)
            entries = raw.get("syncs") if isinstance(raw, dict) and "syncs" in raw else [raw]
            if not isinstance(entries, list):
                raise ConfigError(f"{file}: syncs: expected a list of syncs")
            relative = _display_path(file)
            for i, entry in enumerate(entries):
                prefix = f"syncs[{i}]." if len(entries) > 1 or "syncs" in raw else ""
                yield DeclaredSync(
                    spec=_sync_spec(entry, relative, prefix),
                    source=SyncSource(kind="file", location=relative),
                )


def _display_path(file: Path) -> str:
    try:
        return str(file.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(file)


def _sync_spec(entry: Any, where: str, prefix: str, model: dict | None = None) -> SyncSpec:
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: {prefix or '(top level)'}: a sync must be a mapping")
    if model is not None:
        if "model" in entry:
            raise ConfigError(f"{where}: {prefix}model: a sync in dbt meta always reads its own model")
        entry = {**entry, "model": model}
    spec = _validate(SyncSpec, entry, where, prefix)
    for i, f in enumerate(spec.fields):
        if f.liquid is not None:
            try:
                parse_template(f.liquid)
            except LiquidSyntaxError as error:
                first_line = str(error).splitlines()[0]
                raise ConfigError(f"{where}: {prefix}fields[{i}].liquid: Liquid syntax error: {first_line}") from None
    return spec


def _read_dbt_manifest(spec: ProjectSpec) -> dict[str, DbtModelInfo]:
    if spec.dbt is None:
        return {}
    path = spec.dbt.manifest_path
    if not path.exists():
        raise ConfigError(f"{path}: dbt manifest missing; run `make manifest` (dbt parse) first")
    manifest = json.loads(path.read_text())
    nodes = {**manifest.get("nodes", {}), **manifest.get("sources", {})}
    models = {}
    for unique_id, node in manifest.get("nodes", {}).items():
        if node.get("resource_type") != "model":
            continue
        models[node["name"]] = DbtModelInfo(
            name=node["name"],
            unique_id=unique_id,
            relation=f'"{node["schema"]}"."{node.get("alias") or node["name"]}"',
            file=node.get("patch_path", "").split("://")[-1] or node.get("original_file_path", ""),
            description=node.get("description", ""),
            columns=tuple(node.get("columns", {})),
            upstream=_upstream(unique_id, nodes),
        )
    return models


def _upstream(unique_id: str, nodes: dict[str, dict]) -> tuple[str, ...]:
    seen: dict[str, None] = {}
    stack = list(nodes.get(unique_id, {}).get("depends_on", {}).get("nodes", []))
    while stack:
        node_id = stack.pop()
        if node_id in seen:
            continue
        seen[node_id] = None
        stack.extend(nodes.get(node_id, {}).get("depends_on", {}).get("nodes", []))
    return tuple(sorted(seen))


def _syncs_from_dbt_meta(spec: ProjectSpec, models: dict[str, DbtModelInfo]) -> Iterable[DeclaredSync]:
    if spec.dbt is None:
        return
    manifest = json.loads(spec.dbt.manifest_path.read_text())
    for node in manifest.get("nodes", {}).values():
        if node.get("resource_type") != "model":
            continue
        meta = (node.get("config") or {}).get("meta") or node.get("meta") or {}
        larder = meta.get("larder")
        if larder is None:
            continue
        info = models[node["name"]]
        where = f"dbt model {info.name} ({info.file})"
        entries = larder.get("syncs") if isinstance(larder, dict) else None
        if not isinstance(entries, list):
            raise ConfigError(f"{where}: meta.larder.syncs: expected a list of syncs")
        for i, entry in enumerate(entries):
            yield DeclaredSync(
                spec=_sync_spec(entry, where, f"meta.larder.syncs[{i}].", model={"dbt": info.name}),
                source=SyncSource(kind="dbt_meta", location=where),
            )


def _check_project(project: Project) -> None:
    """Rules that span syncs: unique names, known regions and dbt models, disjoint fields."""
    seen: dict[str, str] = {}
    for declared in project.syncs:
        spec, where = declared.spec, declared.source.location
        if spec.name in seen:
            raise ConfigError(f"{where}: name: sync {spec.name!r} is also declared in {seen[spec.name]}")
        seen[spec.name] = where
        for region in spec.regions or ():
            if region not in project.regions:
                raise ConfigError(
                    f"{where}: regions: unknown region {region!r} (configured: {', '.join(project.regions)})"
                )
        if spec.model.dbt is not None and spec.model.dbt not in project.dbt_models:
            manifest = project.spec.dbt.manifest_path if project.spec.dbt else "no dbt project configured"
            raise ConfigError(f"{where}: model.dbt: dbt model {spec.model.dbt!r} is not in the dbt manifest ({manifest})")
    for collection in project.collection_names:
        _check_collection(project, collection)


def _check_collection(project: Project, collection: str) -> None:
    specs = project.syncs_for(collection)
    if not specs:
        return
    primary = specs[0].primary_index
    owners: dict[tuple[str, ...], str] = {}
    index_owner: dict[str, str] = {}
    for spec in specs:
        where = project.source_of(spec.name).location
        if spec.primary_index != primary:
            raise ConfigError(
                f"{where}: primary_index: {spec.primary_index!r} differs from {primary!r}, the primary index "
                f"of collection {collection!r} in sync {specs[0].name!r}; syncs merging into one collection share it"
            )
        for index in spec.indices:
            if index in index_owner:
                raise ConfigError(
                    f"{where}: indices: index {index!r} of collection {collection!r} is already declared by sync "
                    f"{index_owner[index]!r}"
                )
            index_owner[index] = spec.name
        for i, f in enumerate(spec.fields):
            if f.target == primary:
                continue
            for path, owner in owners.items():
                if owner != spec.name and _overlaps(path, f.path):
                    raise ConfigError(
                        f"{where}: fields[{i}].to: field {f.target!r} of collection {collection!r} overlaps "
                        f"{'.'.join(path)!r}, written by sync {owner!r}; syncs of one collection write disjoint fields"
                    )
            owners[f.path] = spec.name


def _overlaps(a: tuple[str, ...], b: tuple[str, ...]) -> bool:
    shorter = min(len(a), len(b))
    return a[:shorter] == b[:shorter]
