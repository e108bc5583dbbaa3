"""Fixtures that start real services: memcached processes, DuckDB and SQLite files, Postgres schemas,
MariaDB databases.

Postgres tests need 127.0.0.1:5432 (trust auth, database `test`); without it they skip with the
reason, unless LARDER_REQUIRE_POSTGRES=1 (set by CI), where they fail instead. MariaDB tests need
127.0.0.1:3306 (root, empty password) and likewise fail instead of skipping under
LARDER_REQUIRE_MARIADB=1.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from tests.support import (
    MemcachedProcess,
    ProjectFactory,
    mariadb_available,
    mariadb_base_url,
    postgres_available,
    postgres_base_url,
)

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def memcached():
    """A fresh memcached process on a free port; `.server` is its host:port."""
    process = MemcachedProcess()
    process.start()
    yield process
    process.stop()


@pytest.fixture
def memcached_pair():
    """Two memcached processes: one region's pool of two servers, or two regions."""
    processes = [MemcachedProcess(), MemcachedProcess()]
    for process in processes:
        process.start()
    yield processes
    for process in processes:
        process.stop()


@pytest.fixture
def duckdb_url(tmp_path) -> str:
    return f"duckdb:///{tmp_path / 'warehouse.duckdb'}"


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'state.db'}"


@pytest.fixture
def postgres_url():
    """A SQLAlchemy URL whose search_path is a fresh schema, dropped afterwards."""
    if not postgres_available():
        if os.environ.get("LARDER_REQUIRE_POSTGRES") == "1":
            pytest.fail("Postgres at 127.0.0.1:5432 is required (LARDER_REQUIRE_POSTGRES=1) but not reachable")
        pytest.skip("Postgres is not reachable at 127.0.0.1:5432 (set LARDER_REQUIRE_POSTGRES=1 to fail instead)")
    import sqlalchemy as sa

    schema = f"larder_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(postgres_base_url())
    with admin.begin() as conn:
        conn.execute(sa.text(f'create schema "{schema}"'))
    yield f"{postgres_base_url()}?options=-csearch_path%3D{schema}"
    with admin.begin() as conn:
        conn.execute(sa.text(f'drop schema "{schema}" cascade'))
    admin.dispose()


@pytest.fixture
def mariadb_url():
    """A SQLAlchemy URL of a fresh MariaDB database, dropped afterwards."""
    if not mariadb_available():
        if os.environ.get("LARDER_REQUIRE_MARIADB") == "1":
            pytest.fail("MariaDB at 127.0.0.1:3306 is required (LARDER_REQUIRE_MARIADB=1) but not reachable")
        pytest.skip("MariaDB is not reachable at 127.0.0.1:3306 (set LARDER_REQUIRE_MARIADB=1 to fail instead)")
    import sqlalchemy as sa

    database = f"larder_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(mariadb_base_url())
    with admin.begin() as conn:
        conn.execute(sa.text(f"create database `{database}` character set utf8mb4"))
    yield f"{mariadb_base_url()}/{database}?charset=utf8mb4"
    with admin.begin() as conn:
        conn.execute(sa.text(f"drop database `{database}`"))
    admin.dispose()


@pytest.fixture
def project_factory(tmp_path, duckdb_url, sqlite_url):
    """Writes larder.yaml and sync files into a temporary folder and loads them."""
    return ProjectFactory(tmp_path, warehouse_url=duckdb_url, state_url=sqlite_url)
