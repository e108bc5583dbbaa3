"""Fixtures that start real services: memcached processes, DuckDB and SQLite files, Postgres schemas,
MariaDB databases; and the two test layers.

Two layers: the fast one runs in this process (config, store, mapping, diff, apply, definitions, the
API through falcon's TestClient), with real memcached, DuckDB, SQLite, Postgres and MariaDB; the
`slow` one starts other processes (gunicorn, nginx, dagster-webserver, a browser, dbt, the `larder`
command, the demo). `make test-fast` runs `-m "not slow"`, `make test` both. A test is marked `slow`
when it uses a fixture named in PROCESS_FIXTURES (directly or through another fixture) or is marked
in its module; a test left unmarked that starts a process anyway fails, naming the process.

Postgres tests need 127.0.0.1:5432 (trust auth, database `test`); without it they skip with the
reason, unless LARDER_REQUIRE_POSTGRES=1 (set by CI), where they fail instead. MariaDB tests need
127.0.0.1:3306 (root, empty password) and likewise fail instead of skipping under
LARDER_REQUIRE_MARIADB=1.
"""

from __future__ import annotations

import os
import subprocess
import uuid

import pytest

from orchestration.config.load import REPO_ROOT
from tests.support import (
    MemcachedProcess,
    ProjectFactory,
    mariadb_available,
    mariadb_base_url,
    postgres_available,
    postgres_base_url,
)

# Fixtures that start a process other than memcached: every test using one is `slow`.
PROCESS_FIXTURES = frozenset({
    "stack", "fresh_stack",  # gunicorn behind nginx (tests/serving, tests/preview), `larder up` (test_devstack)
    "demo_built",  # dbt build of the demo project
    "tiny_dbt",  # dbt build and test of a small project
    "shop",  # dbt parse of a small project
    "demo_stack", "api_server",  # dbt build, then `larder serve`
    "served_region",  # `larder init`, dbt and `larder serve`
    "postgres_stack", "postgres_region",  # gunicorn reading Postgres state (tests/serving)
})
# Modules where tests start gunicorn, nginx or a `larder sync` process themselves, not through a
# fixture, kept here rather than in the modules (their owners may move the mark onto those tests).
PROCESS_MODULES = frozenset({
    "tests/serving/test_auth.py", "tests/serving/test_cache_faults.py", "tests/serving/test_fallback.py",
    "tests/serving/test_proxy.py", "tests/serving/test_state_outages.py", "tests/sync/test_engine_crash.py",
})
# What the fast layer may start: a real cache is in process enough, and Dagster mirrors the logs of
# a run materialized in process through `tail` and a watcher script; importing Dagster's vendored
# croniter asks `file` about the interpreter (platform.architecture).
IN_PROCESS_PROGRAMS = frozenset({"memcached", "tail", "watch_orphans.py", "file"})

_started: list[str] = []  # every process started in this session, by program name
_STARTED_BEFORE = pytest.StashKey[int]()


def pytest_configure(config):
    _record_started_processes()


def pytest_collection_modifyitems(items):
    for item in items:
        module = item.path.relative_to(REPO_ROOT).as_posix() if item.path.is_relative_to(REPO_ROOT) else ""
        if module in PROCESS_MODULES or PROCESS_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


def _record_started_processes() -> None:
    """Note the program of every process started through subprocess.Popen (subprocess.run and the
    rest go through it) and start it as before: only which tests start processes is observed."""
    init = subprocess.Popen.__init__
    if getattr(init, "records_started", False):
        return

    def recording_init(self, args, *rest, **kwargs):
        _started.append(_program_name(args))
        init(self, args, *rest, **kwargs)

    recording_init.records_started = True
    subprocess.Popen.__init__ = recording_init


def _program_name(args) -> str:
    """`memcached`, `tail`; for Python, the script or module it runs (`python3 orchestration.cli`)."""
    if isinstance(args, (str, bytes, os.PathLike)):
        argv = os.fsdecode(args).split()
    else:
        argv = [os.fsdecode(arg) for arg in args]
    name = os.path.basename(argv[0])
    if name.startswith("python") and len(argv) > 1:
        target = argv[2] if argv[1] == "-m" and len(argv) > 2 else argv[1]
        name = f"{name} {os.path.basename(target)}"
    return name


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    item.stash[_STARTED_BEFORE] = len(_started)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if call.when != "teardown" or item.get_closest_marker("slow") is not None or _STARTED_BEFORE not in item.stash:
        return report
    programs = sorted({p for p in _started[item.stash[_STARTED_BEFORE]:] if p.split()[-1] not in IN_PROCESS_PROGRAMS})
    if programs and report.passed:
        report.outcome = "failed"
        report.longrepr = (f"{item.nodeid} started {', '.join(programs)} but is not marked slow: mark it (or its "
                           "module) with pytest.mark.slow, or add its fixture to PROCESS_FIXTURES in tests/conftest.py")
    return report


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
