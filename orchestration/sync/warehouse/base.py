"""The warehouse seam: what the sync engine, the asset checks and the model assets need from a
warehouse, whatever it is. One backend per module (duckdb.py, sqlalchemy.py); `Warehouse(url)`
picks it from the URL (`backend_for`, the only place that does).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

# (pk, fingerprint) of what a sync wrote, in batches: what a delta compares the model with.
Snapshot = Iterable[list[tuple[str, int]]]
# The most rows a part of a split delta yields per chunk: several processes read parts at once and
# each holds about two chunks' rows and records (at 10,000 rows of 400 B, 100 MB), so a part reads
# fewer at a time than the sync's chunk_size.
PART_CHUNK_ROWS = 2_000


class WarehouseError(RuntimeError):
    """The model's query failed; the message carries the database's reason."""


class DeltaRow(NamedTuple):
    """A model row that needs mapping, or (`row` None) a snapshot record whose row left the model."""

    row: dict[str, Any] | None
    pk: str | None  # the primary index value as SQL computed it (None: null or empty)
    fingerprint: int | None  # hash of the columns the record depends on and of the mapping
    previous: int | None  # the snapshot's fingerprint of this pk (None: not in the snapshot)
    shared: bool  # another row of the model has the same primary or extra index value


class ModelDelta(Protocol):
    """Iterating yields chunks of DeltaRow: every row that is new, changed, shares an index value
    with another row, or has a null primary index, and every snapshot pk no row has any more.

    A row absent from the chunks is unchanged and unique, so it needs neither mapping nor
    duplicate checks; `snapshot_size` (known once iteration starts) lets the caller count them.
    The fingerprint covers only the mapping's source columns, salted with the mapping, so a
    column the mapping does not read changes nothing and a changed mapping changes every
    fingerprint.
    """

    snapshot_size: int

    def __iter__(self) -> Iterator[list[DeltaRow]]: ...


class DeltaMapping(Protocol):
    """What a delta needs to know of the sync's mapping (RecordMapper provides it)."""

    fingerprint_salt: str

    def sql_index_columns(self, column_types: Mapping[str, str]) -> list[str] | None: ...

    def source_columns(self, columns: Sequence[str]) -> list[str]: ...


@dataclass
class Duplicates:
    """Values of a column held by more than one row: how many, and the most repeated ones."""

    values: int
    samples: list[tuple[Any, int]] = field(default_factory=list)  # (value, rows), most repeated first


class Warehouse(ABC):
    """One narrow interface over a warehouse. `Warehouse(url)` returns the backend for the URL."""

    url: str
    supports_delta: bool = False  # can diff in the warehouse (iter_delta)

    def __new__(cls, url: str, *args, **kwargs):
        if cls is Warehouse:
            cls = backend_for(url)
        return super().__new__(cls)

    # --- what a sync reads ---------------------------------------------------------------

    @abstractmethod
    def columns(self, sql: str) -> list[str]:
        """The model's column names, without reading its rows."""

    @abstractmethod
    def column_types(self, sql: str) -> dict[str, str]:
        """The model's column → the warehouse's type name, upper case (`BIGINT`, `NUMERIC(10,2)`)."""

    @abstractmethod
    def iter_chunks(self, sql: str, chunk_size: int) -> Iterator[list[dict[str, Any]]]:
        """Stream the model's rows as lists of dicts, at most `chunk_size` at a time. Values are
        what the record is built from, the same for the same data on every warehouse (see
        README, "How values are served")."""

    def delta(self, sql: str, mapping: DeltaMapping, *, snapshot: Snapshot, rewrite_all: bool,
              chunk_size: int) -> ModelDelta | None:
        """The rows that differ from the snapshot, compared where the data lives; None when this
        warehouse cannot diff (the caller then maps every row): no pushdown for its dialect, or
        an index value SQL cannot compute exactly as the record's key."""
        if not self.supports_delta:
            return None
        column_types = self.column_types(sql)
        index_columns = mapping.sql_index_columns(column_types)
        if index_columns is None:
            return None
        return self.iter_delta(
            sql, index_columns=index_columns, source_columns=mapping.source_columns(list(column_types)),
            snapshot=snapshot, salt=mapping.fingerprint_salt, rewrite_all=rewrite_all, chunk_size=chunk_size,
        )

    def iter_delta(self, sql: str, *, index_columns: Sequence[str], source_columns: Sequence[str], snapshot: Snapshot,
                   salt: str, rewrite_all: bool, chunk_size: int) -> ModelDelta:
        """The delta for known index columns (primary first) and source columns (see ModelDelta).
        `rewrite_all` yields every row, as changed or new."""
        raise NotImplementedError(f"{type(self).__name__} cannot diff in the warehouse")

    @abstractmethod
    def rows_with_keys(self, sql: str, column: str, keys: Sequence[str], chunk_size: int) -> Iterator[list[dict[str, Any]]]:
        """The model's rows whose `column`, as index text (null when empty), is one of `keys`; only
        for a column `DeltaMapping.sql_index_columns` accepted (its SQL text is the index text)."""

    # --- what asset checks and model previews read ----------------------------------------

    @abstractmethod
    def count(self, sql: str) -> int:
        """The model's row count."""

    @abstractmethod
    def count_null_or_empty(self, sql: str, column: str) -> int:
        """Rows whose `column` is null or, as text, empty: rows a sync cannot key by it."""

    @abstractmethod
    def duplicates(self, sql: str, column: str, samples: int) -> Duplicates:
        """Non-null values of `column` held by more than one row (compared exactly: case and
        trailing spaces count), with the `samples` most repeated."""

    @abstractmethod
    def preview(self, sql: str, limit: int = 100) -> list[dict[str, Any]]:
        """The model's first `limit` rows, values as `iter_chunks` gives them."""

    @abstractmethod
    def dispose(self) -> None:
        """Close what the warehouse holds open."""


def backend_for(url: str) -> type[Warehouse]:
    """The backend of a warehouse URL: DuckDB natively, anything else through SQLAlchemy."""
    if url.startswith("duckdb"):
        from orchestration.sync.warehouse.duckdb import DuckDBWarehouse

        return DuckDBWarehouse
    from orchestration.sync.warehouse.sqlalchemy import SqlWarehouse

    return SqlWarehouse
