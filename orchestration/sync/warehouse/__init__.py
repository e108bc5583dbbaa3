"""Reading models from the warehouse: one interface (base.Warehouse), one module per backend.

    Warehouse(url)    the backend for the URL: DuckDB (duckdb.py) or SQLAlchemy (sqlalchemy.py)
"""

from orchestration.sync.warehouse.base import (
    DeltaMapping,
    DeltaRow,
    Duplicates,
    ModelDelta,
    Snapshot,
    Warehouse,
    WarehouseError,
    backend_for,
)

__all__ = [
    "DeltaMapping", "DeltaRow", "Duplicates", "ModelDelta", "Snapshot", "Warehouse", "WarehouseError", "backend_for",
]
