"""Reading a model from the warehouse (DuckDB or Postgres through SQLAlchemy), in chunks."""

from __future__ import annotations

from typing import Any, Iterator

import sqlalchemy as sa
from sqlalchemy.engine import Engine


class WarehouseError(RuntimeError):
    """The model's query failed; the message carries the database's reason."""


def make_warehouse_engine(url: str) -> Engine:
    if url.startswith("duckdb"):
        # Read-only, so syncs do not take DuckDB's writer lock away from dbt.
        return sa.create_engine(url, connect_args={"read_only": True}, poolclass=sa.pool.NullPool)
    return sa.create_engine(url, pool_pre_ping=True)


class Warehouse:
    def __init__(self, url: str, *, engine: Engine | None = None):
        self.url = url
        self.engine = engine or make_warehouse_engine(url)

    def columns(self, sql: str) -> list[str]:
        """The model's column names, without reading its rows."""
        try:
            with self.engine.connect() as conn:
                result = conn.execute(sa.text(f"select * from ({sql}) as larder_model where 1 = 0"))
                return list(result.keys())
        except sa.exc.DBAPIError as error:
            raise WarehouseError(f"model query failed: {error.orig}") from None

    def iter_chunks(self, sql: str, chunk_size: int) -> Iterator[list[dict[str, Any]]]:
        """Stream the model's rows as lists of dicts, at most `chunk_size` at a time."""
        with self.engine.connect() as conn:
            try:
                result = conn.execution_options(stream_results=True, yield_per=chunk_size).execute(sa.text(sql))
            except sa.exc.DBAPIError as error:
                raise WarehouseError(f"model query failed: {error.orig}") from None
            names = list(result.keys())
            for part in result.partitions(chunk_size):
                yield [dict(zip(names, row)) for row in part]

    def preview(self, sql: str, limit: int = 100) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            result = conn.execute(sa.text(f"select * from ({sql}) as larder_model limit {int(limit)}"))
            names = list(result.keys())
            return [dict(zip(names, row)) for row in result]

    def count(self, sql: str) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(sa.text(f"select count(*) from ({sql}) as larder_model")).scalar_one())

    def dispose(self) -> None:
        self.engine.dispose()
