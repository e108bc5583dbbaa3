"""Run resources: made from the project the definitions were built from, opened once per run, and
only for the runs whose steps use them."""

from __future__ import annotations

import os
import subprocess
import sys

import dagster as dg
import duckdb
import orjson
import pytest

from orchestration.config.load import REPO_ROOT
from orchestration.definitions import build_definitions
from orchestration.store import envelope
from orchestration.store.cache import RecordCache
from orchestration.store.keys import record_key

PEOPLE = [(1, "Ann Lee"), (2, "Bo Chan")]


@pytest.fixture
def people(project_factory, duckdb_url, memcached):
    """A one-sync project over a `people` table of the DuckDB warehouse, writing one region."""
    conn = duckdb.connect(duckdb_url.removeprefix("duckdb:///"))
    conn.execute("create table people (user_id integer, name varchar)")
    conn.executemany("insert into people values (?, ?)", PEOPLE)
    conn.close()
    sync = {
        "name": "people",
        "model": {"sql": "select * from people"},
        "collection": "people",
        "primary_index": "user_id",
        "fields": [{"column": "user_id"}, {"column": "name"}],
    }
    return project_factory([sync], regions={"test": [memcached.server]})


def served(memcached, user_id: int) -> dict | None:
    cache = RecordCache([memcached.server])
    try:
        raw = cache.get(record_key("people", "user_id", str(user_id)))
    finally:
        cache.close()
    return None if raw is None else orjson.loads(envelope.unpack(raw).body)


def resources_opened(result: dg.ExecuteInProcessResult) -> list[str]:
    """The resources the run initialized, each as often as it was, by name."""
    return sorted(
        name
        for event in result.all_events
        if event.event_type == dg.DagsterEventType.RESOURCE_INIT_SUCCESS
        for name in event.event_specific_data.metadata
        if ":" not in name  # beside each resource's entry, its `name:init_time`
    )


def test_a_run_uses_the_project_its_definitions_were_built_from_not_the_files_as_they_are_now(people, memcached):
    defs = build_definitions(people)
    people.path.write_text("this: [is no longer a larder.yaml\n")

    result = defs.resolve_job_def("sync_people").execute_in_process(instance=dg.DagsterInstance.ephemeral())

    assert result.success
    assert served(memcached, 2) == {"user_id": 2, "name": "Bo Chan"}


def test_each_resource_is_opened_once_per_run_however_many_steps_use_it(people):
    defs = build_definitions(people)

    result = defs.resolve_job_def("sync_people").execute_in_process(instance=dg.DagsterInstance.ephemeral())

    # model (warehouse), sync (state, warehouse, caches), collection (state): three steps, one of each
    assert result.success
    assert [name for name in resources_opened(result) if name in {"state", "warehouse", "caches"}] == [
        "caches", "state", "warehouse"
    ]


def test_a_run_opens_only_the_resources_its_steps_use(people):
    defs = build_definitions(people)
    model_only = dg.define_asset_job("model_only", selection="model/people_sql_model")
    job = dg.Definitions.merge(defs, dg.Definitions(jobs=[model_only])).resolve_job_def("model_only")

    result = job.execute_in_process(instance=dg.DagsterInstance.ephemeral())

    assert result.success
    assert "state" not in resources_opened(result)
    assert "caches" not in resources_opened(result)


@pytest.mark.slow  # a fresh interpreter imports the code location
def test_importing_the_code_location_loads_no_project_until_dagster_calls_it(tmp_path):
    missing = tmp_path / "nowhere" / "larder.yaml"
    script = (
        "import orchestration.definitions as location\n"
        "from orchestration.config.load import ConfigError\n"
        "print('imported')\n"
        "try:\n    location.defs()\nexcept ConfigError as error:\n    print('refused:', error)\n"
    )
    env = {**os.environ, "LARDER_CONFIG": str(missing)}

    run = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                         timeout=120)

    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines()[0] == "imported"
    assert run.stdout.splitlines()[1].startswith(f"refused: {missing}: cannot read")
