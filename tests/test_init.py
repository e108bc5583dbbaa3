"""`larder init` on a dbt project of the tests' own: init, validate, sync and a lookup, with no hand edits.

Then the dbt-meta example it writes, pasted where it says, is served by the API already running.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
import yaml

from orchestration.init import InitError, read_dbt_target, warehouse_url
from tests.small_dbt import dbt, paste_meta_example, write_small_dbt_project
from tests.support import MemcachedProcess, free_port

pytestmark = pytest.mark.slow

# Variables a developer's shell or `make` may set that would point the commands elsewhere.
OUTSIDE = ("LARDER_HOME", "LARDER_CONFIG", "LARDER_STATE_URL", "LARDER_WAREHOUSE_PATH", "DAGSTER_HOME",
           "DBT_PROFILES_DIR", "DBT_TARGET", "LARDER_API_PORT", "LARDER_MEMCACHED_PORT")


def larder(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "orchestration.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture
def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in OUTSIDE}


@pytest.fixture
def served_region(tmp_path, clean_env):
    """A memcached for the region and the ports the generated larder.yaml reads from the environment."""
    memcached = MemcachedProcess()
    memcached.start()
    env = {**clean_env, "LARDER_MEMCACHED_PORT": str(memcached.port), "LARDER_API_PORT": str(free_port())}
    yield env
    memcached.stop()


def test_init_validate_sync_and_a_lookup_through_a_served_region_with_no_hand_edits(tmp_path, served_region):
    env = served_region
    shop = write_small_dbt_project(tmp_path / "shop")
    project = tmp_path / "larder"

    init = larder("init", "--dbt-project", str(shop), "--dir", str(project), env=env, cwd=tmp_path)
    assert init.returncode == 0, init.stdout + init.stderr
    config = project / "larder.yaml"
    assert yaml.safe_load(config.read_text())["warehouse"]["url"] == f"duckdb:///{shop / 'shop.duckdb'}"
    assert (project / "syncs" / "customers.yaml").exists()
    assert "larder up" in init.stdout

    dbt(shop, "build")  # what a dbt user does anyway: Larder reads the built models
    validate = larder("--config", str(config), "validate", env=env, cwd=tmp_path)
    assert validate.returncode == 0, validate.stdout + validate.stderr
    assert "every mapped column is in the model" in validate.stdout
    sync = larder("--config", str(config), "sync", env=env, cwd=tmp_path)
    assert sync.returncode == 0, sync.stdout + sync.stderr
    key = larder("--config", str(config), "keys", "create", "--name", "test", "--quiet", env=env, cwd=tmp_path)
    secret = key.stdout.strip()
    assert (project / ".larder" / "state.db").exists()  # the runtime folder is beside larder.yaml

    api = subprocess.Popen([sys.executable, "-m", "orchestration.cli", "--config", str(config), "serve",
                            "--region", "main", "--workers", "1"], cwd=tmp_path, env=env,
                           stdout=subprocess.DEVNULL, stderr=open(tmp_path / "api.log", "wb"))
    base = f"http://127.0.0.1:{env['LARDER_API_PORT']}"
    headers = {"Authorization": f"Bearer {secret}"}
    try:
        ada = poll(lambda: requests.get(f"{base}/v1/collections/customers/records/customer_id/1", headers=headers,
                                        timeout=5), lambda r: r.status_code == 200)
        assert ada.status_code == 200, ada.text
        assert ada.json() == {"customer_id": 1, "first_name": "Ada", "last_name": "Lovelace",
                              "email": "ada@example.com", "plan": "pro", "summary": "1: Ada"}

        # The dbt-meta example, pasted where it says, parsed: the running API serves its collection.
        paste_meta_example(project / "dbt_meta_example.yml", shop / "models" / "schema.yml")
        dbt(shop, "parse")
        sync = larder("--config", str(config), "sync", "plans", env=env, cwd=tmp_path)
        assert sync.returncode == 0, sync.stdout + sync.stderr
        pro = poll(lambda: requests.get(f"{base}/v1/collections/plans/records/plan_id/pro", headers=headers, timeout=5),
                   lambda r: r.status_code == 200)
        assert pro.status_code == 200, pro.text
        assert pro.json() == {"plan_id": "pro", "members": 2, "label": "plans pro"}  # the Liquid survived dbt
    finally:
        api.terminate()
        api.wait(timeout=30)


def test_init_again_keeps_every_file_unless_forced(tmp_path, clean_env):
    shop = write_small_dbt_project(tmp_path / "shop")
    project = tmp_path / "larder"
    assert larder("init", "--dbt-project", str(shop), "--dir", str(project), env=clean_env, cwd=tmp_path).returncode == 0
    sync_file = project / "syncs" / "customers.yaml"
    sync_file.write_text(sync_file.read_text().replace("delete: delete", "delete: keep"))

    again = larder("init", "--dbt-project", str(shop), "--dir", str(project), env=clean_env, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "delete: keep" in sync_file.read_text()
    assert f"kept    {sync_file}" in again.stdout

    forced = larder("init", "--dbt-project", str(shop), "--dir", str(project), "--force", env=clean_env, cwd=tmp_path)
    assert forced.returncode == 0, forced.stderr
    assert "delete: delete" in sync_file.read_text()


def test_init_says_what_is_missing_when_the_folder_is_not_a_dbt_project(tmp_path, clean_env):
    result = larder("init", "--dbt-project", str(tmp_path), "--dir", str(tmp_path / "larder"), env=clean_env, cwd=tmp_path)

    assert result.returncode == 2
    assert "no dbt_project.yml" in result.stderr
    assert not (tmp_path / "larder").exists()


def profile(tmp_path: Path, output: dict) -> Path:
    (tmp_path / "dbt_project.yml").write_text("name: p\nprofile: p\n")
    (tmp_path / "profiles.yml").write_text(yaml.safe_dump({"p": {"target": "dev", "outputs": {"dev": output}}}))
    return tmp_path


def test_a_duckdb_path_read_from_the_environment_keeps_reading_it_with_its_default_resolved(tmp_path):
    dbt_project = profile(tmp_path, {"type": "duckdb", "path": "{{ env_var('WAREHOUSE', 'data/w.duckdb') }}"})

    url = warehouse_url(read_dbt_target(dbt_project, profiles_dir=None, target=None))

    assert url == f"duckdb:///${{WAREHOUSE:-{tmp_path / 'data' / 'w.duckdb'}}}"


def test_a_postgres_profile_becomes_a_url_whose_secrets_stay_in_the_environment(tmp_path):
    dbt_project = profile(tmp_path, {"type": "postgres", "host": "db.internal", "port": 5433, "user": "dbt",
                                     "password": "{{ env_var('DBT_PASSWORD') }}", "dbname": "analytics",
                                     "schema": "marts"})

    url = warehouse_url(read_dbt_target(dbt_project, profiles_dir=None, target=None))

    assert url == "postgresql+psycopg://dbt:${DBT_PASSWORD}@db.internal:5433/analytics"


def test_a_warehouse_larder_cannot_read_is_a_clear_error(tmp_path):
    dbt_project = profile(tmp_path, {"type": "snowflake", "account": "x"})

    with pytest.raises(InitError, match="'snowflake' warehouse; Larder reads DuckDB and Postgres"):
        warehouse_url(read_dbt_target(dbt_project, profiles_dir=None, target=None))


def poll(ask, until, seconds: float = 60.0):
    deadline = time.monotonic() + seconds
    while True:
        try:
            answer = ask()
        except requests.ConnectionError:  # not listening yet
            answer = None
        if (answer is not None and until(answer)) or time.monotonic() > deadline:
            return answer
        time.sleep(0.2)
