"""Load larder.yaml, the sync files it names and syncs declared in dbt meta into one `Project`.

Every error names where it came from: the file (or dbt model) and the field, e.g.
`syncs/customers.yaml: fields[2].liquid: Liquid syntax error ...`.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from orchestration.config.dbt import TemplateRenderedAway, check_meta_templates, stale_sources
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
MESSAGE_LOCATION = re.compile(r"^([a-z_]+(?:\[\d+\])?(?:\.[a-z_]+)*): ")
DEMO_CONFIG = REPO_ROOT / "orchestration" / "larder.yaml"


class ConfigError(ValueError):
    """A configuration problem; the message starts with the file or model and the field.

    `warnings` are what the loader noticed before it failed (e.g. a dbt manifest older than the
    files it was parsed from), often the reason for the error.
    """

    warnings: tuple[str, ...] = ()


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
    warnings: tuple[str, ...] = ()  # worth telling a user, not errors (see dbt_manifest_warnings)

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
                    f"{where}: fields[{i}].column: unknown column {f.column!r} in {spec.model_label} "
                    f"(columns: {', '.join(sorted(available))})"
                )
            if f.liquid is not None:
                missing = sorted(set(parse_template(f.liquid).global_variables()) - available)
                if missing:
                    raise ConfigError(
                        f"{where}: fields[{i}].liquid: template reads unknown column(s) "
                        f"{', '.join(missing)} of {spec.model_label}"
                    )


def load_project(path: str | Path | None = None, *, check_indices: bool = True) -> Project:
    """Read and validate a whole project. Raises ConfigError naming the file and field.

    `check_indices=False` lets an index that no field maps through: `larder validate` loads so to
    check the mapped columns against the warehouse first, since a misspelt column is the usual
    reason an index is not mapped.
    """
    path = Path(path) if path is not None else default_config_path()
    raw = _read_yaml(path)
    spec = _validate(ProjectSpec, _interpolate(raw, path), str(path))
    spec = _resolve_paths(spec, path.parent)
    dbt_models = _read_dbt_manifest(spec)
    warnings = tuple(dbt_manifest_warnings(spec))
    context = {"unmapped_indices_allowed": not check_indices}
    try:
        declared = [*_syncs_from_files(spec, path.parent, context), *_syncs_from_dbt_meta(spec, dbt_models, context)]
        project = Project(path=path, spec=spec, syncs=tuple(declared), dbt_models=dbt_models, warnings=warnings)
        _check_project(project)
    except ConfigError as error:
        error.warnings = warnings
        raise
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


def _validate(model, data: Any, where: str, prefix: str = "", context: dict | None = None):
    try:
        return model.model_validate(data, context=context)
    except ValidationError as error:
        raise ConfigError(_describe(error, where, prefix)) from None


def _describe(error: ValidationError, where: str, prefix: str = "") -> str:
    problems = []
    for item in error.errors():
        loc, message = _format_loc(item["loc"]), item["msg"].removeprefix("Value error, ")
        named = MESSAGE_LOCATION.match(message) if not loc else None
        if named:  # a model validator names the field its message is about
            loc, message = named.group(1), message[named.end():]
        loc = prefix + loc
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


def _syncs_from_files(spec: ProjectSpec, base: Path, context: dict) -> Iterable[DeclaredSync]:
    for pattern in spec.syncs:
        for file in sorted(base.glob(pattern)):
            raw = _read_yaml(file)
            entries = raw.get("syncs") if isinstance(raw, dict) and "syncs" in raw else [raw]
            if not isinstance(entries, list):
                raise ConfigError(f"{file}: syncs: expected a list of syncs")
            relative = _display_path(file)
            for i, entry in enumerate(entries):
                prefix = f"syncs[{i}]." if len(entries) > 1 or "syncs" in raw else ""
                yield DeclaredSync.model_construct(  # spec and source are validated already
                    spec=_sync_spec(entry, relative, prefix, context),
                    source=SyncSource(kind="file", location=relative, entry=prefix),
                )


def _display_path(file: Path) -> str:
    try:
        return str(file.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(file)


def _sync_spec(entry: Any, where: str, prefix: str, context: dict, model: dict | None = None) -> SyncSpec:
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: {prefix or '(top level)'}: a sync must be a mapping")
    if model is not None:
        if "model" in entry:
            raise ConfigError(f"{where}: {prefix}model: a sync in dbt meta always reads its own model")
        entry = {**entry, "model": model}
    spec = _validate(SyncSpec, entry, where, prefix, context)
    for i, f in enumerate(spec.fields):
        if f.liquid is not None:
            try:
                parse_template(f.liquid)
            except LiquidSyntaxError as error:
                first_line = str(error).splitlines()[0]
                raise ConfigError(f"{where}: {prefix}fields[{i}].liquid: Liquid syntax error: {first_line}") from None
    _check_field_paths(spec, where, prefix)
    return spec


def _check_field_paths(spec: SyncSpec, where: str, prefix: str) -> None:
    """A field is a value or an object of fields, never both: `orders` beside `orders.first_order` is an error."""
    for j, later in enumerate(spec.fields):
        for i, earlier in enumerate(spec.fields[:j]):
            if earlier.path != later.path and _overlaps(earlier.path, later.path):
                relation = "is nested in" if len(later.path) > len(earlier.path) else "holds"
                raise ConfigError(
                    f"{where}: {prefix}fields[{j}].to: field {later.target!r} {relation} {earlier.target!r}, "
                    f"which fields[{i}] writes; a field is either a value or an object of fields"
                )


def _read_dbt_manifest(spec: ProjectSpec) -> dict[str, DbtModelInfo]:
    if spec.dbt is None:
        return {}
    path = spec.dbt.manifest_path
    if not path.exists():
        raise ConfigError(f"{path}: dbt manifest missing; run `{dbt_parse_command(spec)}` first")
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
            file=(node.get("patch_path") or "").split("://")[-1] or node.get("original_file_path", ""),
            description=node.get("description", ""),
            columns=tuple(node.get("columns", {})),
            upstream=_upstream(unique_id, nodes),
        )
    return models


def dbt_parse_command(spec: ProjectSpec) -> str:
    """The command that writes the project's dbt manifest."""
    assert spec.dbt is not None
    # Larder reads profiles.yml from the project folder by default; dbt would look in ~/.dbt.
    profiles_dir = spec.dbt.profiles_dir or spec.dbt.project_dir
    command = f"dbt parse --project-dir {spec.dbt.project_dir} --profiles-dir {profiles_dir}"
    if spec.dbt.target:
        command += f" --target {spec.dbt.target}"
    return command


def dbt_manifest_warnings(spec: ProjectSpec) -> list[str]:
    """What a user should hear about the dbt manifest without it being an error: files changed since."""
    dbt = spec.dbt
    if dbt is None or not dbt.manifest_path.exists():
        return []
    newer = stale_sources(dbt.project_dir, dbt.manifest_path)
    if not newer:
        return []
    names = ", ".join(str(path.relative_to(dbt.project_dir)) for path in newer[:5])
    more = f" and {len(newer) - 5} more" if len(newer) > 5 else ""
    return [
        f"{names}{more} changed after the dbt manifest was written ({dbt.manifest_path}): models and syncs "
        f"declared there may be stale; run `{dbt_parse_command(spec)}`"
    ]


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


def _syncs_from_dbt_meta(spec: ProjectSpec, models: dict[str, DbtModelInfo], context: dict) -> Iterable[DeclaredSync]:
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
        try:
            check_meta_templates(entries, model=info.name, patch_path=node.get("patch_path") or "",
                                 project_dir=spec.dbt.project_dir, parse_command=dbt_parse_command(spec))
        except TemplateRenderedAway as error:
            raise ConfigError(f"{where}: {error}") from None
        for i, entry in enumerate(entries):
            prefix = f"meta.larder.syncs[{i}]."
            yield DeclaredSync.model_construct(  # spec and source are validated already
                spec=_sync_spec(entry, where, prefix, context, model={"dbt": info.name}),
                source=SyncSource(kind="dbt_meta", location=where, entry=prefix),
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
    owners: dict[tuple[str, ...], tuple[SyncSpec, int]] = {}
    index_owner: dict[str, str] = {}
    for spec in specs:
        source = project.source_of(spec.name)
        where = f"{source.location}: {source.entry}"
        if spec.primary_index != primary:
            raise ConfigError(
                f"{where}primary_index: {spec.primary_index!r} differs from {primary!r}, the primary index "
                f"of collection {collection!r} in sync {specs[0].name!r}; syncs merging into one collection share it"
            )
        for index in spec.indices:
            if index in index_owner:
                raise ConfigError(
                    f"{where}indices: index {index!r} of collection {collection!r} is already declared by sync "
                    f"{index_owner[index]!r}"
                )
            index_owner[index] = spec.name
        for i, f in enumerate(spec.fields):
            for path, (owner, j) in owners.items():
                shared_primary = path == f.path == (primary,)
                if owner.name != spec.name and not shared_primary and _overlaps(path, f.path):
                    other = project.source_of(owner.name)
                    raise ConfigError(
                        f"{where}fields[{i}].to: field {f.target!r} of collection {collection!r} overlaps "
                        f"{'.'.join(path)!r}, written by fields[{j}] of sync {owner.name!r} ({other.location}); "
                        "syncs of one collection write disjoint fields"
                    )
        for i, f in enumerate(spec.fields):
            owners.setdefault(f.path, (spec, i))


def _overlaps(a: tuple[str, ...], b: tuple[str, ...]) -> bool:
    shorter = min(len(a), len(b))
    return a[:shorter] == b[:shorter]
