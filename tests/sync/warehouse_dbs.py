"""Real warehouses for tests, one class per kind behind the same few methods: create a table from
portable column kinds, run statements. The `warehouse_db` fixtures (tests/sync/conftest.py) make one
of each, so a test written once runs on DuckDB, Postgres and MariaDB."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import duckdb
import sqlalchemy as sa

# Portable column kinds → each warehouse's type. None: the warehouse has no such type.
KINDS: dict[str, dict[str, str | None]] = {
    "integer": {"duckdb": "integer", "postgres": "integer", "mariadb": "int"},
    "bigint": {"duckdb": "bigint", "postgres": "bigint", "mariadb": "bigint"},
    "text": {"duckdb": "varchar", "postgres": "text", "mariadb": "varchar(1000)"},
    "varchar": {"duckdb": "varchar", "postgres": "varchar(1000)", "mariadb": "varchar(1000)"},
    "decimal": {"duckdb": "decimal(10,2)", "postgres": "numeric(10,2)", "mariadb": "decimal(10,2)"},
    "double": {"duckdb": "double", "postgres": "double precision", "mariadb": "double"},
    "boolean": {"duckdb": "boolean", "postgres": "boolean", "mariadb": "boolean"},
    "date": {"duckdb": "date", "postgres": "date", "mariadb": "date"},
    "timestamp": {"duckdb": "timestamp", "postgres": "timestamp", "mariadb": "datetime"},
    "timestamptz": {"duckdb": "timestamptz", "postgres": "timestamptz", "mariadb": "timestamp null"},
    "json": {"duckdb": "json", "postgres": "jsonb", "mariadb": "json"},
    "text_array": {"duckdb": "varchar[]", "postgres": "text[]", "mariadb": None},
}


class WarehouseDb:
    kind: str
    url: str
    _tables: dict[str, str]  # table → the column definitions it was last created with

    def has(self, kind: str) -> bool:
        return KINDS[kind][self.kind] is not None

    def create(self, table: str, columns: Sequence[tuple[str, str]], rows: Sequence[Sequence[Any]]) -> None:
        """(Re)create `table` with (name, kind) columns and insert the rows (text for dates, JSON…)."""
        ddl = ", ".join(f"{self.quote(name)} {KINDS[kind][self.kind]}" for name, kind in columns)
        if self._tables.get(table) == ddl:
            self.run(f"delete from {table}")  # DDL is slow on MariaDB: the property test makes hundreds
        else:
            self.run(f"drop table if exists {table}", f"create table {table} ({ddl})")
            self._tables[table] = ddl
        if rows:
            self.insert(table, rows)

    def quote(self, name: str) -> str:
        return '"' + name.replace('"', '""') + '"'

    def run(self, *statements: str) -> None:
        raise NotImplementedError

    def insert(self, table: str, rows: Sequence[Sequence[Any]]) -> None:
        raise NotImplementedError


class DuckDb(WarehouseDb):
    kind = "duckdb"

    def __init__(self, url: str):
        self.url = url
        self.path = url.removeprefix("duckdb:///")
        self._tables = {}

    def run(self, *statements: str) -> None:
        with duckdb.connect(self.path) as conn:
            conn.execute("set TimeZone = 'UTC'")
            for statement in statements:
                conn.execute(statement)

    def insert(self, table: str, rows: Sequence[Sequence[Any]]) -> None:
        with duckdb.connect(self.path) as conn:
            conn.execute("set TimeZone = 'UTC'")
            conn.executemany(f"insert into {table} values ({', '.join('?' for _ in rows[0])})", [list(r) for r in rows])


class SqlDb(WarehouseDb):
    session: tuple[str, ...] = ()

    def __init__(self, url: str):
        self.url = url
        self._tables = {}

    def run(self, *statements: str) -> None:
        self._execute(list(statements))

    def insert(self, table: str, rows: Sequence[Sequence[Any]]) -> None:
        marks = ", ".join("%s" for _ in rows[0])
        self._execute([], (f"insert into {table} values ({marks})", [tuple(r) for r in rows]))

    def _execute(self, statements: list[str], many: tuple[str, list] | None = None) -> None:
        engine = sa.create_engine(self.url)
        try:
            with engine.begin() as conn:
                for statement in (*self.session, *statements):
                    conn.exec_driver_sql(statement)
                if many:
                    conn.connection.driver_connection.cursor().executemany(*many)
        finally:
            engine.dispose()


class PostgresDb(SqlDb):
    kind = "postgres"
    session = ("set time zone 'UTC'",)


class MariaDb(SqlDb):
    kind = "mariadb"
    session = ("set time_zone = '+00:00'",)

    def quote(self, name: str) -> str:
        return "`" + name.replace("`", "``") + "`"
