"""Liquid in dbt meta, through a real `dbt parse` of a small dbt project (dbt-duckdb) written per test.

dbt renders models YAML with Jinja at parse time. A Liquid template written inside
`{% raw %}…{% endraw %}` reaches Larder intact and is served; one written bare is refused with the
fix, never served as whatever Jinja left of it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest
import yaml

from orchestration.cli import main
from orchestration.config import ConfigError
from tests.sync.conftest import SyncHarness

GREETING = "{{ first_name }} ({{ genre }})"
STATUS = "{{ status | replace: '_', ' ' | capitalize }}"


def raw(template: str) -> str:
    return "{% raw %}" + template + "{% endraw %}"


class DbtShop:
    """A dbt project in `root/shop` whose models live in `transform/` (not dbt's default `models/`)."""

    def __init__(self, root: Path, warehouse: Path):
        self.dir = root / "shop"
        self.models = self.dir / "transform" / "marts" / "people"
        self.models.mkdir(parents=True)
        (self.dir / "dbt_project.yml").write_text(
            "name: shop\nversion: '1.0.0'\nprofile: shop\nmodel-paths: [transform]\n"
        )
        (self.dir / "profiles.yml").write_text(yaml.safe_dump(
            {"shop": {"target": "dev", "outputs": {"dev": {"type": "duckdb", "path": str(warehouse), "schema": "main",
                                                           "threads": 1}}}}
        ))
        (self.models / "people.sql").write_text("select 1 as user_id")
        with duckdb.connect(str(warehouse)) as conn:  # what `dbt build` would leave, without building
            conn.execute("create or replace table main.people as select * from (values (1, 'Ann', 'rock', 'on_hold'), "
                         "(2, 'Bob', 'jazz', 'active')) t(user_id, first_name, genre, status)")

    @property
    def yaml_file(self) -> Path:
        return self.models / "_people__models.yml"

    def declare(self, *liquid: str) -> None:
        """The model's YAML: a sync whose fields after user_id are these Liquid templates, as written."""
        fields = [{"column": "user_id"}, *({"to": f"t{i}", "liquid": text} for i, text in enumerate(liquid))]
        sync = {"name": "people", "collection": "people", "primary_index": "user_id", "fields": fields}
        self.yaml_file.write_text(yaml.safe_dump(
            {"version": 2, "models": [{"name": "people", "config": {"meta": {"larder": {"syncs": [sync]}}}}]},
            sort_keys=False, width=1000,
        ))

    def dated_after_manifest(self, path: Path) -> None:
        later = (self.dir / "target" / "manifest.json").stat().st_mtime + 60
        os.utime(path, (later, later))

    def parse(self) -> subprocess.CompletedProcess:
        dbt = Path(sys.executable).with_name("dbt")
        env = {**os.environ, "DBT_SEND_ANONYMOUS_USAGE_STATS": "false", "DO_NOT_TRACK": "1"}
        return subprocess.run(
            [str(dbt if dbt.exists() else shutil.which("dbt")), "parse", "--project-dir", str(self.dir),
             "--profiles-dir", str(self.dir)],
            capture_output=True, text=True, env=env, timeout=120,
        )

    def parsed(self) -> None:
        result = self.parse()
        assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture
def shop(tmp_path) -> DbtShop:
    return DbtShop(tmp_path, tmp_path / "warehouse.duckdb")


def load_error(project_factory) -> str:
    with pytest.raises(ConfigError) as error:
        project_factory([], extra={"dbt": {"project_dir": "shop"}})
    return str(error.value)


def test_liquid_wrapped_in_raw_survives_dbt_parse_and_is_served_with_its_filters(
        shop, project_factory, duckdb_url, memcached, capsys):
    shop.declare(raw(GREETING), raw(STATUS))
    shop.parsed()
    harness = SyncHarness(project_factory, duckdb_url, {"main": [memcached.server]})
    try:
        project = harness.configure(extra={"dbt": {"project_dir": "shop"}})
        config = str(project.path)

        assert [f.liquid for f in project.sync("people").fields[1:]] == [GREETING, STATUS]
        assert main(["--config", config, "validate"]) == 0
        assert main(["--config", config, "sync"]) == 0
        assert harness.get("people", "user_id", 1) == {"user_id": 1, "t0": "Ann (rock)", "t1": "On hold"}
    finally:
        harness.close()
    assert "warning" not in capsys.readouterr().err


def test_liquid_written_bare_is_rendered_away_by_dbt_and_refused_with_the_fix(shop, project_factory, capsys):
    shop.declare(GREETING)
    shop.parsed()  # dbt accepts it: the manifest holds " ()"

    text = load_error(project_factory)
    assert main(["--config", str(shop.dir.parent / "larder.yaml"), "sync"]) == 2

    assert text.startswith("dbt model people (transform/marts/people/_people__models.yml): "
                           "meta.larder.syncs[0].fields[1].liquid: dbt renders Jinja in YAML at parse time")
    assert "(the manifest holds ' ()')" in text
    assert """liquid: '{% raw %}{{ first_name }} ({{ genre }}){% endraw %}'""" in text
    assert f"run `dbt parse --project-dir {shop.dir} --profiles-dir {shop.dir}`" in text
    assert "meta.larder.syncs[0].fields[1].liquid: dbt renders Jinja" in capsys.readouterr().err


def test_a_filter_written_bare_breaks_dbt_parse_and_the_old_manifest_is_not_served(shop, project_factory, capsys):
    shop.declare(raw(GREETING))
    shop.parsed()
    shop.declare(GREETING, STATUS)
    shop.dated_after_manifest(shop.yaml_file)  # whatever the filesystem's clock resolution

    broken = shop.parse()
    text = load_error(project_factory)
    assert main(["--config", str(shop.dir.parent / "larder.yaml"), "validate", "--offline"]) == 2

    assert broken.returncode != 0 and "Could not render" in broken.stdout + broken.stderr
    assert "meta.larder.syncs[0].fields[1].liquid: dbt renders Jinja in YAML at parse time" in text
    err = capsys.readouterr().err
    assert ("larder: warning: transform/marts/people/_people__models.yml changed after the dbt manifest was "
            "written") in err


def test_a_template_edited_after_dbt_parse_asks_for_a_new_parse(shop, project_factory):
    shop.declare(raw(GREETING))
    shop.parsed()
    shop.declare(raw(STATUS))

    text = load_error(project_factory)

    assert ("meta.larder.syncs[0].fields[1].liquid: the dbt manifest holds '{{ first_name }} ({{ genre }})' but "
            f"{shop.yaml_file} says {raw(STATUS)!r}: the manifest is older than the file") in text


def test_liquid_in_a_sql_config_block_is_left_alone_by_dbt_so_a_raw_wrapper_there_is_refused(shop, project_factory):
    def sql_config(template: str) -> str:
        sync = {"name": "people", "collection": "people", "primary_index": "user_id",
                "fields": [{"column": "user_id"}, {"to": "t0", "liquid": template}]}
        return "{{ config(meta={'larder': {'syncs': [" + repr(sync) + "]}}) }}\nselect 1 as user_id\n"

    (shop.models / "people.sql").write_text(sql_config(GREETING))
    shop.parsed()
    project = project_factory([], extra={"dbt": {"project_dir": "shop"}})
    assert project.sync("people").fields[1].liquid == GREETING

    (shop.models / "people.sql").write_text(sql_config(raw(GREETING)))
    shop.parsed()
    assert "fields[1].liquid: the template still holds a raw tag, which Liquid would print as plain text" in \
        load_error(project_factory)
