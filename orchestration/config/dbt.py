"""What dbt does to a sync declared in a model's YAML, and how Larder makes sure it did no harm.

dbt renders every string of a models YAML file with Jinja when it parses the project, `meta`
included. Liquid looks like Jinja, so `liquid: "{{ first_name }}"` reaches the manifest as `""`
and a filter (`{{ status | replace: '_', ' ' }}`) makes `dbt parse` fail. The way to write Liquid
in dbt meta is inside Jinja's raw block, which dbt removes while it passes the text through:

    liquid: "{% raw %}{{ status | replace: '_', ' ' }}{% endraw %}"

Larder reads each template's text as written in the model's YAML file (the manifest names it as
the model's `patch_path`) and refuses, at load, a template that dbt's Jinja changed: the served
text would be whatever Jinja left of it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jinja2
import yaml

# A Jinja (or Liquid) raw tag left in a template, e.g. `{%- raw %}` or `{% endraw -%}`.
RAW_TAG = re.compile(r"\{%-?\s*(?:end)?raw\s*-?%\}")
# Files whose change `dbt parse` must see; folders dbt writes or installs into are skipped.
DBT_SOURCE_SUFFIXES = {".sql", ".yml", ".yaml", ".py"}
DBT_OUTPUT_FOLDERS = {"target", "dbt_packages", "dbt_modules", "logs"}

_JINJA = jinja2.Environment()  # dbt's delimiters and whitespace rules; only used to lex and render raw text


class TemplateRenderedAway(ValueError):
    """dbt's Jinja changed a Liquid template declared in dbt meta; the message says how to fix it."""


def check_meta_templates(
    syncs: Any,
    *,
    model: str,
    patch_path: str,
    project_dir: Path,
    parse_command: str,
) -> None:
    """Raise TemplateRenderedAway (message: `<field>: <problem>`) for a template dbt's Jinja changed.

    `syncs` is the model's `meta.larder.syncs` as the manifest holds it (rendered by dbt).
    """
    templates = list(_liquid_fields(syncs))
    if not templates:
        return
    declared = _declared_syncs(project_dir, patch_path, model)
    for i, j, rendered in templates:
        field = f"meta.larder.syncs[{i}].fields[{j}].liquid"
        if isinstance(rendered, str) and RAW_TAG.search(rendered):
            raise TemplateRenderedAway(
                f"{field}: the template still holds a raw tag, which Liquid would print as plain text: dbt "
                "did not render this value (declared in a SQL config() block, where Jinja leaves strings "
                "alone?); write the template there without {% raw %}…{% endraw %}"
            )
        if declared is None:
            continue  # not declared in the YAML file (e.g. a SQL config() block): dbt rendered nothing
        yaml_file, declared_syncs = declared
        written = _template_at(declared_syncs, i, j)
        if written is None:
            raise TemplateRenderedAway(
                f"{field}: not in {yaml_file} any more: the dbt manifest is older than the file; "
                f"run `{parse_command}`"
            )
        if not _markup_is_all_raw(written):
            raise TemplateRenderedAway(
                f"{field}: dbt renders Jinja in YAML at parse time, so it cannot pass this Liquid template "
                f"through (the manifest holds {rendered!r}). Wrap the template in a raw block, which dbt "
                f"removes: liquid: {_wrapped(written)!r}; then run `{parse_command}`"
            )
        if rendered != _JINJA.from_string(written).render():
            raise TemplateRenderedAway(
                f"{field}: the dbt manifest holds {rendered!r} but {yaml_file} says {written!r}: the manifest "
                f"is older than the file; run `{parse_command}`"
            )


def stale_sources(project_dir: Path, manifest: Path) -> list[Path]:
    """The project's SQL, YAML and Python files changed after `manifest` was written."""
    written = manifest.stat().st_mtime
    newer = []
    for folder, subfolders, files in os.walk(project_dir):
        subfolders[:] = sorted(d for d in subfolders if d not in DBT_OUTPUT_FOLDERS and not d.startswith("."))
        for name in sorted(files):
            path = Path(folder) / name
            if path.suffix in DBT_SOURCE_SUFFIXES and not name.startswith(".") and path.stat().st_mtime > written:
                newer.append(path)
    return newer


def _liquid_fields(syncs: Any) -> Iterator[tuple[int, int, Any]]:
    for i, entry in enumerate(syncs if isinstance(syncs, list) else []):
        fields = entry.get("fields") if isinstance(entry, dict) else None
        for j, field in enumerate(fields if isinstance(fields, list) else []):
            if isinstance(field, dict) and "liquid" in field:
                yield i, j, field["liquid"]


def _declared_syncs(project_dir: Path, patch_path: str, model: str) -> tuple[Path, Any] | None:
    """The model's `meta.larder.syncs` as written in its YAML file, or None if not declared there."""
    if not patch_path:
        return None
    relative = patch_path.split("://", 1)[-1]
    candidates = [project_dir / relative, *sorted(project_dir.glob(f"dbt_packages/*/{relative}"))]
    yaml_file = next((path for path in candidates if path.is_file()), None)
    if yaml_file is None:
        raise TemplateRenderedAway(
            f"meta.larder: cannot read {project_dir / relative}, the model's YAML file, to check its Liquid "
            "templates: the dbt manifest is older than the project; parse it again"
        )
    try:
        document = yaml.safe_load(yaml_file.read_text()) or {}
    except yaml.YAMLError as error:
        raise TemplateRenderedAway(f"meta.larder: {yaml_file}: invalid YAML: {error}") from None
    models = document.get("models") if isinstance(document, dict) else None
    for entry in models if isinstance(models, list) else []:
        if isinstance(entry, dict) and entry.get("name") == model:
            for meta in ((entry.get("config") or {}).get("meta"), entry.get("meta")):
                if isinstance(meta, dict) and isinstance(meta.get("larder"), dict):
                    return yaml_file, meta["larder"].get("syncs")
    return None


def _template_at(syncs: Any, i: int, j: int) -> str | None:
    try:
        value = syncs[i]["fields"][j]["liquid"]
    except (TypeError, KeyError, IndexError):
        return None
    return value if isinstance(value, str) else None


def _markup_is_all_raw(text: str) -> bool:
    """True when every `{{`, `{%` and `{#` of the text is inside a raw block: dbt renders none of it."""
    try:
        kinds = {kind for _, kind, _ in _JINJA.lexer.tokeniter(text, None)}
    except jinja2.TemplateSyntaxError:
        return False
    return kinds <= {"data", "raw_begin", "raw_end"}


def _wrapped(template: str) -> str:
    if RAW_TAG.search(template):
        return "{% raw %}…{% endraw %} around every {{ }} and {% %} of the template"
    return "{% raw %}" + template + "{% endraw %}"
