"""The Dagster instance files: the SQLite default `larder up` runs with, and the documented Postgres one."""

from __future__ import annotations

import os
import shutil
import uuid

import dagster as dg
import pytest
import sqlalchemy as sa

from orchestration.config.load import REPO_ROOT
from tests.support import postgres_available, postgres_base_url

DEFAULT = REPO_ROOT / "orchestration" / "dagster.yaml"
POSTGRES = REPO_ROOT / "orchestration" / "dagster-postgres.yaml"


def instance_from(path, home) -> dg.DagsterInstance:
    shutil.copyfile(path, home / "dagster.yaml")
    return dg.DagsterInstance.from_config(str(home))


@dg.asset
def greeting() -> str:
    return "hello"


def test_the_default_instance_queues_one_run_at_a_time_without_telemetry_or_first_visit_pop_up(tmp_path):
    instance = instance_from(DEFAULT, tmp_path)
    try:
        coordinator = instance.run_coordinator
        assert type(coordinator).__name__ == "QueuedRunCoordinator"
        assert coordinator.get_run_queue_config().max_concurrent_runs == 1
        assert instance.telemetry_enabled is False
        assert instance.nux_enabled is False
    finally:
        instance.dispose()


@pytest.fixture
def postgres_database():
    """A fresh database on the test Postgres (Dagster's tables live in its public schema), dropped after."""
    if not postgres_available():
        if os.environ.get("LARDER_REQUIRE_POSTGRES") == "1":
            pytest.fail("Postgres at 127.0.0.1:5432 is required (LARDER_REQUIRE_POSTGRES=1) but not reachable")
        pytest.skip("Postgres is not reachable at 127.0.0.1:5432 (set LARDER_REQUIRE_POSTGRES=1 to fail instead)")
    name = f"dagster_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(postgres_base_url(), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'create database "{name}"'))
    url = sa.make_url(postgres_base_url()).set(drivername="postgresql+psycopg2", database=name)
    yield url.render_as_string(hide_password=False)
    with admin.connect() as conn:
        conn.execute(sa.text(f'drop database "{name}" with (force)'))
    admin.dispose()


def test_the_postgres_instance_keeps_runs_and_materializations_in_postgres(tmp_path, monkeypatch, postgres_database):
    monkeypatch.setenv("DAGSTER_POSTGRES_URL", postgres_database)
    instance = instance_from(POSTGRES, tmp_path)
    try:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
        assert type(instance.schedule_storage).__name__ == "PostgresScheduleStorage"
        result = dg.materialize([greeting], instance=instance)
        assert result.success
    finally:
        instance.dispose()

    elsewhere = tmp_path / "another-machine"
    elsewhere.mkdir()
    again = instance_from(POSTGRES, elsewhere)  # no local files shared: only the database
    try:
        assert again.get_run_by_id(result.run_id).is_success
        assert again.get_latest_materialization_event(dg.AssetKey("greeting")) is not None
    finally:
        again.dispose()
