"""Asset checks on each model, one set per sync reading it: would the sync's records be servable?

- `<sync>_primary_index_not_null`: every row has a primary index value;
- `<sync>_primary_index_unique` and `<sync>_<index>_unique`: no two rows share an index value;
- `<sync>_records_within_size_limit`: every mapped record fits the sync's size limit.

Uniqueness and nulls are counted by SQL in the warehouse for indices read from a column; indices
rendered by Liquid, and record sizes, need the sync's own mapper, so those scan the rows once.
The checks sit on the model asset and run in its step, so they are decided before the sync reading
the model starts. When the sync sets `block_on_failed_checks: true`, a failed check holds the sync
back and the sync's asset says which (assets/gate.py); Dagster's own blocking would skip the sync
step without a word.
"""

# No `from __future__ import annotations`: Dagster reads the context and resource annotations.

import sys
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import dagster as dg

from orchestration.assets.keys import model_key
from orchestration.config.load import Project
from orchestration.config.specs import FieldSpec, SyncSpec
from orchestration.store.keys import index_text
from orchestration.sync.mapping import RecordMapper, RowRejected
from orchestration.sync.warehouse import Warehouse

SAMPLE_SIZE = 5


@dataclass
class CheckOutcome:
    """One check's verdict, with the numbers and samples that explain it."""

    name: str
    passed: bool
    description: str
    metadata: dict[str, Any] = field(default_factory=dict)


def check_names(spec: SyncSpec) -> dict[str, str]:
    """Check name → what it promises, for one sync."""
    names = {
        f"{spec.name}_primary_index_not_null": f"Every row has a value for primary index {spec.primary_index!r}.",
        f"{spec.name}_primary_index_unique": f"No two rows share a {spec.primary_index!r} value.",
    }
    for index in spec.indices:
        names[f"{spec.name}_{index}_unique"] = f"No two rows share a value of index {index!r}."
    names[f"{spec.name}_records_within_size_limit"] = "Every record the sync maps fits its size limit."
    return names


def evaluate_checks(project: Project, spec: SyncSpec, warehouse: Warehouse) -> list[CheckOutcome]:
    """Run every check of one sync against its model in the warehouse."""
    sql = project.model_sql(spec)
    limit = project.max_record_bytes(spec)
    scan = _scan_with_mapper(spec, warehouse, sql, project.spec.defaults.chunk_size, limit)
    outcomes = [_not_null(spec, warehouse, sql, scan)]
    for index in spec.index_names:
        name = f"{spec.name}_{'primary_index' if index == spec.primary_index else index}_unique"
        column = _column_of(spec, index)
        duplicates = _sql_duplicates(warehouse, sql, column) if column else _scanned_duplicates(scan, index)
        outcomes.append(_unique(name, index, duplicates))
    outcomes.append(
        CheckOutcome(
            f"{spec.name}_records_within_size_limit",
            passed=not scan.oversized,
            description=(
                f"{scan.oversized} record(s) over the {limit}-byte limit" if scan.oversized
                else f"every record within {limit} bytes"
            ),
            metadata={
                "limit_bytes": limit,
                "largest_record_bytes": scan.largest,
                "oversized": scan.oversized,
                "oversized_samples": scan.oversized_samples,
            },
        )
    )
    return outcomes


def check_specs(spec: SyncSpec) -> list[dg.AssetCheckSpec]:
    """The checks of one sync, on its model asset."""
    holds = f" A failure holds sync {spec.name} back." if spec.block_on_failed_checks else ""
    return [
        dg.AssetCheckSpec(
            name,
            asset=model_key(spec),
            description=description + holds,
            metadata={"larder/sync": spec.name, "larder/holds_sync": spec.block_on_failed_checks},
        )
        for name, description in check_names(spec).items()
    ]


def check_results(project: Project, spec: SyncSpec, warehouse: Warehouse) -> list[dg.AssetCheckResult]:
    """Evaluate the checks of one sync against its model, as results of the model's step."""
    return [
        dg.AssetCheckResult(
            check_name=outcome.name,
            asset_key=model_key(spec),
            passed=outcome.passed,
            severity=dg.AssetCheckSeverity.ERROR,
            description=outcome.description,
            metadata={key: _metadata(value) for key, value in outcome.metadata.items()},
        )
        for outcome in evaluate_checks(project, spec, warehouse)
    ]


@dataclass
class _Duplicates:
    values: int  # distinct values held by more than one row
    samples: list[dict[str, Any]]  # the most repeated values and their row counts


@dataclass
class _Scan:
    """What one pass of the sync's mapper over the model found."""

    null_primary: int = 0
    largest: int = 0
    oversized: int = 0
    oversized_samples: list[dict[str, Any]] = field(default_factory=list)
    index_values: dict[str, Counter] = field(default_factory=dict)


def _column_of(spec: SyncSpec, index: str) -> str | None:
    """The model column an index is read from as it is; None when Liquid renders it."""
    mapped: FieldSpec = next(f for f in spec.fields if f.target == index)
    return mapped.column


def _not_null(spec: SyncSpec, warehouse: Warehouse, sql: str, scan: "_Scan") -> CheckOutcome:
    column = _column_of(spec, spec.primary_index)
    if column is not None:
        nulls = warehouse.count_null_or_empty(sql, column)
    else:
        nulls = scan.null_primary
    return CheckOutcome(
        f"{spec.name}_primary_index_not_null",
        passed=nulls == 0,
        description=f"{nulls} row(s) without a {spec.primary_index!r} value" if nulls else "no null values",
        metadata={"null_rows": nulls},
    )


def _unique(name: str, index: str, duplicates: _Duplicates) -> CheckOutcome:
    return CheckOutcome(
        name,
        passed=duplicates.values == 0,
        description=(
            f"{duplicates.values} {index!r} value(s) shared by several rows" if duplicates.values else "all values unique"
        ),
        metadata={"duplicate_values": duplicates.values, "duplicate_samples": duplicates.samples},
    )


def _sql_duplicates(warehouse: Warehouse, sql: str, column: str) -> _Duplicates:
    found = warehouse.duplicates(sql, column, SAMPLE_SIZE)
    return _Duplicates(found.values, [{"value": index_text(value), "rows": n} for value, n in found.samples])


def _scanned_duplicates(scan: _Scan, index: str) -> _Duplicates:
    repeated = [(value, n) for value, n in scan.index_values[index].most_common() if n > 1]
    return _Duplicates(len(repeated), [{"value": value, "rows": n} for value, n in repeated[:SAMPLE_SIZE]])


def _scan_with_mapper(spec: SyncSpec, warehouse: Warehouse, sql: str, chunk_size: int, limit: int) -> _Scan:
    """Map every row without the size limit, to measure records and collect Liquid-rendered indices."""
    mapper = RecordMapper(spec, max_record_bytes=sys.maxsize)
    rendered = [index for index in spec.index_names if _column_of(spec, index) is None]
    scan = _Scan(index_values={index: Counter() for index in rendered})
    for chunk in warehouse.iter_chunks(sql, chunk_size):
        for row in chunk:
            try:
                record = mapper.map_row(row)
            except RowRejected as error:
                # No record, so no size; a row left without a primary value cannot be keyed at all
                # (null, empty, or its Liquid template failed).
                scan.null_primary += error.pk is None
                continue
            size = len(record.body)
            scan.largest = max(scan.largest, size)
            if size > limit:
                scan.oversized += 1
                if len(scan.oversized_samples) < SAMPLE_SIZE:
                    scan.oversized_samples.append({"pk": record.pk, "bytes": size})
            for name, value in record.index_values:
                if name in scan.index_values:
                    scan.index_values[name][value] += 1
    return scan


def _metadata(value: Any) -> dg.MetadataValue:
    if isinstance(value, bool):
        return dg.MetadataValue.bool(value)
    if isinstance(value, int):
        return dg.MetadataValue.int(value)
    return dg.MetadataValue.json(value)
