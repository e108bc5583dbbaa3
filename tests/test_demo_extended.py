"""A dbt user adds a model and a sync in its meta to the demo: the tests that read the demo stay green.

The repository is copied to a temporary folder (sources, tests, demo configuration and dbt
project), a model `artist_profiles` with a meta sync of a new collection is added, and the tests
that load the demo run there. Only tests/orchestration/test_demo.py, which pins the demo's own
content, is left out.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from orchestration.config.load import REPO_ROOT
from tests.test_init import OUTSIDE

pytestmark = pytest.mark.slow

COPIED = ("orchestration", "serving", "tests", "bench", "dbt_project", "pyproject.toml", "workspace.yaml")
SKIPPED = shutil.ignore_patterns(".venv", ".larder", "target", "logs", "__pycache__", "*.pyc", "dbt_packages")
# The tests that load the demo's own configuration (the others build projects of their own).
DEMO_READING_TESTS = (
    "tests/orchestration/test_demo.py", "tests/orchestration/test_definitions.py",
    "tests/orchestration/test_sensors.py", "tests/orchestration/test_triggers.py",
    "tests/orchestration/test_webserver.py", "tests/orchestration/assets/test_checks.py",
    "tests/orchestration/assets/test_models.py", "tests/orchestration/assets/test_syncs.py", "tests/config/test_load.py",
    "tests/config/test_changes.py", "tests/serving/test_lineage.py", "tests/serving/test_openapi.py",
    "tests/test_walking_skeleton.py",
)
MODEL_SQL = "select artist_id, artist_name, genre from {{ ref('stg_artists') }}\n"
MODEL_PROPERTIES = """
  - name: artist_profiles
    description: One row per artist, added by a dbt user.
    config:
      meta:
        larder:
          syncs:
            - name: artist_profiles
              collection: artists
              primary_index: artist_id
              fields:
                - column: artist_id
                - {column: artist_name, to: name}
                - column: genre
              trigger: {on_upstream_change: true}
    columns:
      - name: artist_id
        data_tests: [unique, not_null]
"""


def copy_of_repository(target: Path) -> Path:
    target.mkdir()
    for name in COPIED:
        source = REPO_ROOT / name
        if source.is_dir():
            shutil.copytree(source, target / name, ignore=SKIPPED)
        else:
            shutil.copy(source, target / name)
    return target


def add_model_and_meta_sync(repository: Path) -> None:
    marts = repository / "dbt_project" / "models" / "marts"
    (marts / "artist_profiles.sql").write_text(MODEL_SQL)
    with (marts / "schema.yml").open("a") as schema:
        schema.write(MODEL_PROPERTIES)


def test_the_demo_reading_tests_pass_after_a_model_and_a_meta_sync_are_added_to_the_demo(tmp_path):
    repository = copy_of_repository(tmp_path / "larder")
    add_model_and_meta_sync(repository)
    env = {k: v for k, v in os.environ.items() if k not in OUTSIDE}
    dbt_project = repository / "dbt_project"
    parse = subprocess.run(
        [str(Path(sys.executable).with_name("dbt")), "parse", "--quiet", "--profiles-dir", ".", "--project-dir", "."],
        cwd=dbt_project, env={**env, "LARDER_WAREHOUSE_PATH": str(tmp_path / "warehouse.duckdb")},
        capture_output=True, text=True,
    )
    assert parse.returncode == 0, parse.stdout + parse.stderr

    # `python -m pytest` from the copy: its folder comes first on sys.path, so the copy is what runs.
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--deselect", "tests/orchestration/test_demo.py",
         *DEMO_READING_TESTS],
        cwd=repository, env=env, capture_output=True, text=True, timeout=1500,
    )

    assert "artists" in (dbt_project / "target" / "manifest.json").read_text()
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
