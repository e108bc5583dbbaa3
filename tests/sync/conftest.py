"""A harness for sync tests: a real DuckDB (or Postgres) model, a real memcached, one call per run."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import contextmanager
from typing import Any

import duckdb
import orjson
import pytest
import sqlalchemy as sa

from orchestration.config.load import Project
from orchestration.store import envelope
from orchestration.store.cache import RecordCache
from orchestration.store.keys import index_text, record_key
from orchestration.sync import Services, SyncReport, run_sync
from orchestration.sync.warehouse.pushdown import KeyedDelta
from tests.sync.warehouse_dbs import DuckDb, MariaDb, PostgresDb, WarehouseDb

# DuckDB column types of the tests' tables → the portable kinds every test warehouse has.
_KIND_OF_DUCKDB_TYPE = {"integer": "integer", "bigint": "bigint", "varchar": "varchar", "double": "double",
                        "boolean": "boolean", "date": "date"}


class SyncHarness:
    """Writes model tables, builds a project whose regions are real memcached processes, runs syncs."""

    def __init__(self, project_factory, duckdb_url: str, servers: dict[str, list[str]], db: WarehouseDb | None = None):
        self.project_factory = project_factory
        self.db = db
        self.warehouse_url = db.url if db is not None else duckdb_url
        self.regions = servers
        self.project: Project | None = None
        self._caches: dict[str, RecordCache] = {}

    def sql(self, *statements: str, parameters: Sequence[Any] | None = None) -> None:
        """Run statements against the warehouse (DuckDB file or a Postgres schema)."""
        if self.warehouse_url.startswith("duckdb"):
            conn = duckdb.connect(self.warehouse_url.removeprefix("duckdb:///"))
            try:
                for statement in statements:
                    conn.execute(statement, parameters) if parameters else conn.execute(statement)
            finally:
                conn.close()
            return
        engine = sa.create_engine(self.warehouse_url)
        with engine.begin() as conn:
            for statement in statements:
                conn.exec_driver_sql(statement)
        engine.dispose()

    def table(self, name: str, columns: str, rows: Sequence[Sequence[Any]]) -> None:
        """Replace a table with these rows (columns: a DuckDB column definition list, translated for
        another warehouse when the harness runs on one)."""
        if self.db is not None and self.db.kind != "duckdb":
            kinds = [part.split() for part in columns.split(",")]
            self.db.create(name, [(column, _KIND_OF_DUCKDB_TYPE[kind.lower()]) for column, kind in kinds], rows)
            return
        conn = duckdb.connect(self.warehouse_url.removeprefix("duckdb:///"))
        try:
            conn.execute(f"create or replace table {name} ({columns})")
            if rows:
                marks = ", ".join("?" for _ in rows[0])
                conn.executemany(f"insert into {name} values ({marks})", [list(r) for r in rows])
        finally:
            conn.close()

    def configure(self, *syncs: dict[str, Any], **kwargs) -> Project:
        kwargs.setdefault("warehouse_url", self.warehouse_url)
        self.project = self.project_factory(list(syncs), regions=self.regions, **kwargs)
        return self.project

    def run(self, name: str, **kwargs) -> SyncReport:
        services = Services(self.project)
        try:
            return run_sync(services, name, **kwargs)
        finally:
            services.close()

    def cache(self, region: str | None = None) -> RecordCache:
        region = region or next(iter(self.regions))
        if region not in self._caches:
            self._caches[region] = RecordCache(self.regions[region])
        return self._caches[region]

    def raw(self, collection: str, index: str, value: Any, region: str | None = None) -> bytes | None:
        return self.cache(region).get(record_key(collection, index, index_text(value)))

    def get(self, collection: str, index: str, value: Any, region: str | None = None) -> dict | None:
        """The record the API would serve for this lookup, or None (404)."""
        packed = self.raw(collection, index, value, region)
        return None if packed is None else orjson.loads(envelope.unpack(packed).body)

    def close(self) -> None:
        for cache in self._caches.values():
            cache.close()


@pytest.fixture
def harness(project_factory, duckdb_url, memcached):
    h = SyncHarness(project_factory, duckdb_url, {"main": [memcached.server]})
    yield h
    h.close()


WAREHOUSE_KINDS = ("duckdb", "postgres", "mariadb")


@pytest.fixture(params=WAREHOUSE_KINDS)
def warehouse_db(request) -> WarehouseDb:
    """An empty warehouse of each kind in turn: a DuckDB file, a Postgres schema, a MariaDB database."""
    return make_warehouse_db(request, request.param)


def make_warehouse_db(request, kind: str) -> WarehouseDb:
    if kind == "duckdb":
        return DuckDb(request.getfixturevalue("duckdb_url"))
    if kind == "postgres":
        return PostgresDb(request.getfixturevalue("postgres_url"))
    return MariaDb(request.getfixturevalue("mariadb_url"))


# A SQL warehouse's delta reads changed rows by key or in one pass over the model, depending on
# how many changed: the harness forces each way in turn.
FETCHES = {"by key": 1.0, "streamed": 0.0}


@pytest.fixture(params=["duckdb", *(f"{kind} {fetch}" for kind in ("postgres", "mariadb") for fetch in FETCHES)])
def any_harness(request, project_factory, duckdb_url, memcached, monkeypatch):
    """The harness on each kind of warehouse, and each way of fetching changed rows, in turn
    (tables made with `table` are translated)."""
    kind, _, fetch = request.param.partition(" ")
    if fetch:
        monkeypatch.setattr(KeyedDelta, "by_key_max_share", FETCHES[fetch])
    h = SyncHarness(project_factory, duckdb_url, {"main": [memcached.server]}, db=make_warehouse_db(request, kind))
    yield h
    h.close()


@pytest.fixture
def kind_harness(project_factory, duckdb_url, memcached, warehouse_db):
    """The harness on each kind of warehouse in turn; the test picks how changed rows are fetched."""
    h = SyncHarness(project_factory, duckdb_url, {"main": [memcached.server]}, db=warehouse_db)
    yield h
    h.close()


@contextmanager
def fetching(way: str):
    """Make SQL warehouses' deltas fetch changed rows `way` (a key of FETCHES) within the block."""
    previous = KeyedDelta.by_key_max_share
    KeyedDelta.by_key_max_share = FETCHES[way]
    try:
        yield
    finally:
        KeyedDelta.by_key_max_share = previous


def record_workers(monkeypatch, module, name: str) -> list[int]:
    """Wrap `module.name` (a function taking `workers=`): the list of how many each call asked for."""
    calls: list[int] = []
    real = getattr(module, name)

    def recording(*args, **kwargs):
        calls.append(kwargs["workers"])
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, recording)
    return calls


def sync_config(name: str = "people", *, model: str = "select * from people", **overrides) -> dict[str, Any]:
    """A sync file's contents, with defaults most tests share."""
    config: dict[str, Any] = {
        "name": name,
        "model": {"sql": model},
        "collection": "people",
        "primary_index": "id",
        "fields": [{"column": "id"}, {"column": "name"}],
    }
    config.update(overrides)
    return config


def dump_keys(server: str) -> set[str]:
    """Every key a memcached server holds (`lru_crawler metadump all`)."""
    import socket
    from urllib.parse import unquote

    host, port = server.split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(b"lru_crawler metadump all\r\n")
        data = b""
        while not data.endswith(b"END\r\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    return {
        unquote(line.split(" ", 1)[0].removeprefix("key="))
        for line in data.decode().splitlines()
        if line.startswith("key=")
    }
