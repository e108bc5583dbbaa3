"""A harness for sync tests: a real DuckDB (or Postgres) model, a real memcached, one call per run."""

from __future__ import annotations

from typing import Any, Sequence

import duckdb
import orjson
import pytest
import sqlalchemy as sa

from orchestration.config.load import Project
from orchestration.store import envelope
from orchestration.store.cache import RecordCache
from orchestration.store.keys import index_text, record_key
from orchestration.sync import Services, SyncReport, run_sync


class SyncHarness:
    """Writes model tables, builds a project whose regions are real memcached processes, runs syncs."""

    def __init__(self, project_factory, duckdb_url: str, servers: dict[str, list[str]]):
        self.project_factory = project_factory
        self.warehouse_url = duckdb_url
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
        """Replace a DuckDB table with these rows (columns: a column definition list)."""
        conn = duckdb.connect(self.warehouse_url.removeprefix("duckdb:///"))
        try:
            conn.execute(f"create or replace table {name} ({columns})")
            if rows:
                marks = ", ".join("?" for _ in rows[0])
                conn.executemany(f"insert into {name} values ({marks})", [list(r) for r in rows])
        finally:
            conn.close()

    def configure(self, *syncs: dict[str, Any], **kwargs) -> Project:
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
