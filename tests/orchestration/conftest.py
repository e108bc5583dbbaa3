"""The demo project on real services, built once for the orchestration tests.

`demo` points the repository's own larder.yaml at a temporary runtime folder (warehouse, state)
and two fresh memcached processes; `demo_built` materializes every asset and check of the demo
once (dbt build → models → syncs), so the tests reading its results share one dbt build.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import orjson
import pytest

from orchestration.config.load import REPO_ROOT, Project, load_project
from orchestration.definitions import build_definitions
from orchestration.store import envelope
from orchestration.store.cache import RecordCache
from orchestration.store.keys import record_key
from tests.support import MemcachedProcess


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
    """The demo after one in-process materialization of every asset and check, as `larder up` does it."""
    result = dg.materialize(
        list(demo.defs.assets),
        resources=demo.defs.resources,
        instance=dg.DagsterInstance.ephemeral(),
        raise_on_error=False,
    )
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


def warehouse_rows(path: Path, sql: str) -> list[tuple]:
    conn = duckdb.connect(str(path), read_only=True)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def environment(extra: dict[str, str]) -> dict[str, str]:
    return {**os.environ, **extra}
