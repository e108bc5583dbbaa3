"""The demo project on real services, built once for the orchestration tests.

`demo` points the repository's own larder.yaml at a temporary runtime folder (warehouse, state)
and two fresh memcached processes; `demo_built` materializes every asset and check of the demo
once (dbt build → models → syncs), so the tests reading its results share one dbt build.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import orjson
import pytest
import requests

from orchestration.config.load import REPO_ROOT, Project, load_project
from orchestration.definitions import build_definitions
from orchestration.jobs import run_bootstrap
from orchestration.store import envelope
from orchestration.store.cache import RecordCache
from orchestration.store.keys import record_key
from tests.support import MemcachedProcess, free_port


@dataclass
class Demo:
    project: Project
    defs: dg.Definitions
    home: Path
    env: dict[str, str]
    memcached: dict[str, MemcachedProcess]
    materialized: dict[str, Any] = field(default_factory=dict)

    @property
    def warehouse_path(self) -> Path:
        return self.home / "warehouse.duckdb"

    @property
    def dagster_home(self) -> Path:
        return self.home / "dagster"

    def record(self, region: str, collection: str, index: str, value: str) -> dict | None:
        """The record the API would serve from the region's memcached, or None."""
        cache = RecordCache([self.memcached[region].server])
        try:
            raw = cache.get(record_key(collection, index, value))
        finally:
            cache.close()
        return None if raw is None else orjson.loads(envelope.unpack(raw).body)


@pytest.fixture(scope="package")
def demo(tmp_path_factory):
    """The repository's demo configuration, its runtime folder and memcached pools made temporary."""
    home = tmp_path_factory.mktemp("larder_home")
    servers = {"us": MemcachedProcess(), "eu": MemcachedProcess()}
    for process in servers.values():
        process.start()
    env = {
        "LARDER_HOME": str(home),
        "LARDER_CONFIG": str(REPO_ROOT / "orchestration" / "larder.yaml"),
        "LARDER_MEMCACHED_US_PORT": str(servers["us"].port),
        "LARDER_MEMCACHED_EU_PORT": str(servers["eu"].port),
        "LARDER_WAREHOUSE_PATH": str(home / "warehouse.duckdb"),
    }
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        patch.delenv("LARDER_STATE_URL", raising=False)
        project = load_project()
        yield Demo(project, build_definitions(project), home, env, servers)
    for process in servers.values():
        process.stop()


@pytest.fixture(scope="package")
def demo_built(demo) -> Demo:
    """The demo after the first build of every asset and check, as `larder up` runs it, recorded in
    a Dagster instance under the demo's runtime folder (`demo.dagster_home`) that a webserver can show."""
    demo.dagster_home.mkdir(exist_ok=True)
    with dg.DagsterInstance.local_temp(tempdir=str(demo.dagster_home)) as instance:
        result = run_bootstrap(demo.defs, instance)
    assert result.success, [e.message for e in result.all_events if e.is_failure]
    demo.materialized = {
        "result": result,
        "metadata": {
            event.asset_key.to_user_string(): event.step_materialization_data.materialization.metadata
            for event in result.get_asset_materialization_events()
        },
        "checks": {
            f"{e.asset_key.to_user_string()}:{e.check_name}": e for e in result.get_asset_check_evaluations()
        },
    }
    return demo


@contextmanager
def running_webserver(env: dict[str, str], dagster_home: Path, log_path: Path) -> Iterator[str]:
    """dagster-webserver on a free port serving workspace.yaml with `env`; yields its base URL."""
    port = free_port()
    log = log_path.open("w")
    process = subprocess.Popen(
        [str(Path(sys.executable).with_name("dagster-webserver")), "-h", "127.0.0.1", "-p", str(port),
         "-w", str(REPO_ROOT / "workspace.yaml")],
        cwd=REPO_ROOT,
        env={**os.environ, **env, "DAGSTER_HOME": str(dagster_home)},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


def wait_until_loaded(base_url: str, log_path: Path, timeout: float = 120.0) -> None:
    """Poll the webserver until its code location has loaded (fail with its log otherwise)."""
    query = "query { locationStatusesOrError { ... on WorkspaceLocationStatusEntries { entries { loadStatus } } } }"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            answer = requests.post(f"{base_url}/graphql", json={"query": query}, timeout=10).json()
            entries = answer["data"]["locationStatusesOrError"]["entries"]
            if entries and all(entry["loadStatus"] == "LOADED" for entry in entries):
                return
        except (requests.ConnectionError, KeyError, TypeError):
            pass
        time.sleep(0.5)
    pytest.fail(f"dagster-webserver did not load the code location in {timeout:.0f}s:\n{log_path.read_text()[-3000:]}")


def warehouse_rows(path: Path, sql: str) -> list[tuple]:
    conn = duckdb.connect(str(path), read_only=True)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def environment(extra: dict[str, str]) -> dict[str, str]:
    return {**os.environ, **extra}


PEOPLE = "user_id,name,country\n1,Ann Lee,FR\n2,Bo Chan,DE\n"
COUNTRIES = "code\nFR\nDE\n"


@dataclass
class TinyDbt:
    """A dbt project of two seeds and one model, with a relationships test, and its Larder project."""

    root: Path
    memcached: MemcachedProcess

    @property
    def people_seed(self) -> Path:
        return self.root / "dbt" / "seeds" / "people_seed.csv"

    def project(self, project_factory, **sync_options) -> Project:
        sync = {
            "name": "people",
            "model": {"dbt": "people"},
            "collection": "people",
            "primary_index": "user_id",
            "fields": [{"column": "user_id"}, {"column": "name"}, {"column": "country"}],
            "trigger": {"on_upstream_change": True},
            **sync_options,
        }
        return project_factory([sync], regions={"test": [self.memcached.server]}, extra={"dbt": {"project_dir": "dbt"}})

    def record(self, user_id: str) -> dict | None:
        cache = RecordCache([self.memcached.server])
        try:
            raw = cache.get(record_key("people", "user_id", user_id))
        finally:
            cache.close()
        return None if raw is None else orjson.loads(envelope.unpack(raw).body)


@pytest.fixture
def tiny_dbt(tmp_path, memcached) -> TinyDbt:
    """Writes and parses the tiny dbt project beside the temporary larder.yaml."""
    dbt = tmp_path / "dbt"
    (dbt / "seeds").mkdir(parents=True)
    (dbt / "models").mkdir()
    (dbt / "dbt_project.yml").write_text(
        "name: tiny\nversion: '1.0'\nprofile: tiny\nseeds:\n  tiny:\n    +column_types: {user_id: integer}\n"
    )
    (dbt / "profiles.yml").write_text(
        f"tiny:\n  target: dev\n  outputs:\n    dev:\n      type: duckdb\n      path: '{tmp_path / 'warehouse.duckdb'}'\n"
        "      threads: 1\n"
    )
    (dbt / "seeds" / "people_seed.csv").write_text(PEOPLE)
    (dbt / "seeds" / "countries.csv").write_text(COUNTRIES)
    (dbt / "models" / "people.sql").write_text("select * from {{ ref('people_seed') }}\n")
    (dbt / "models" / "schema.yml").write_text(
        "version: 2\nmodels:\n  - name: people\n    columns:\n      - name: country\n        data_tests:\n"
        "          - relationships:\n              arguments: {to: ref('countries'), field: code}\n"
    )
    subprocess.run(
        [str(Path(sys.executable).with_name("dbt")), "parse", "--quiet", "--profiles-dir", ".", "--project-dir", "."],
        cwd=dbt, check=True,
    )
    return TinyDbt(tmp_path, memcached)
