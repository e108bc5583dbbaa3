"""Row → record: select, rename, nest and Liquid-transform a model row into a JSON record."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any, NamedTuple

import orjson

from orchestration.config.liquid import LiquidError, direct_renderer, parse_template
from orchestration.config.specs import FieldType, SyncSpec
from orchestration.store.keys import index_text


class RowRejected(Exception):
    """A row that cannot become a record; the message is the reason the run reports."""

    def __init__(self, reason: str, pk: str | None = None):
        super().__init__(reason)
        self.pk = pk

    def __reduce__(self):  # keeps the pk when a worker process sends it back
        return type(self), (str(self), self.pk)


class MappedRecord(NamedTuple):  # a tuple: cheap to build, and to pickle between worker processes
    pk: str
    body: bytes  # the sync's fields as JSON, exactly as they will be served
    row_hash: int  # signed 64-bit hash of body: what the snapshot compares (0 when not hashed)
    index_values: tuple[tuple[str, str], ...]  # (index name, value text), primary first
    is_new: bool = False  # not in the sync's snapshot: it has no index keys of this sync to replace


def record_of(fields: tuple) -> MappedRecord:
    """A MappedRecord of its fields in order, without the Python-level constructor a NamedTuple
    has: built once per row, a million times in a large sync."""
    return tuple.__new__(MappedRecord, fields)


def json_default(value: Any) -> Any:
    """orjson's fallback for warehouse types it does not know: decimals become numbers."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() and value.as_tuple().exponent >= 0 else float(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode("utf-8", "replace")
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    if isinstance(value, timedelta):
        return value.total_seconds()  # intervals as seconds: comparable and easy to use in templates
    raise TypeError(f"cannot encode {type(value).__name__} as JSON")


def encode_fields(fields: dict[str, Any]) -> bytes:
    return orjson.dumps(fields, default=json_default, option=orjson.OPT_NON_STR_KEYS)


# Column types (as each warehouse names them: DuckDB, Postgres, MariaDB/MySQL) whose text form in
# SQL (the warehouse's cast to text, '' as null) is exactly `index_text` of the mapped value, for
# the field types listed: the warehouse can then compare keys without Python. Fixed-width CHAR is
# not among them (Postgres pads it in Python, not in text), nor are binary strings.
SQL_INTEGER_TYPES = frozenset({
    "TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT", "UHUGEINT",
    "INT2", "INT4", "INT8",  # Postgres
    "INT", "MEDIUMINT", "TINYINT UNSIGNED", "SMALLINT UNSIGNED", "MEDIUMINT UNSIGNED", "INT UNSIGNED",
    "BIGINT UNSIGNED",  # MariaDB/MySQL
})
SQL_TEXT_TYPES = frozenset({"VARCHAR", "TEXT"})
_KEY_TEXT_IN_SQL = {
    **{name: frozenset({FieldType.auto, FieldType.string}) for name in SQL_TEXT_TYPES},
    **{name: frozenset({FieldType.auto, FieldType.string, FieldType.integer, FieldType.number}) for name in SQL_INTEGER_TYPES},
}
# Bumped when mapping changes in a way the spec does not show, so every record is rewritten once.
MAPPING_VERSION = "1"


def hash_body(body: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(body, digest_size=8).digest(), "big", signed=True)


class RecordMapper:
    """Built once per run from a SyncSpec; `map_row` is the per-row hot path."""

    def __init__(self, spec: SyncSpec, *, max_record_bytes: int):
        self.spec = spec
        self.max_record_bytes = max_record_bytes
        # Fields copied as they are from a column to a top-level name, as long as they come first
        # (a record keeps the fields' order), are taken in one dict comprehension: most syncs' fields.
        copied = 0
        while copied < len(spec.fields) and _copied_as_is(spec.fields[copied]):
            copied += 1
        self._copied = tuple((f.target, f.column) for f in spec.fields[:copied])
        self._steps = tuple(_field_step(f) for f in spec.fields[copied:])
        # Only the columns templates read are prepared for Liquid (see liquid_scope).
        self._liquid_columns = tuple(sorted({
            name for f in spec.fields if f.liquid is not None
            for name in parse_template(f.liquid).global_variables()
        }))
        self._index_names = spec.index_names  # indices are top-level mapped fields
        primary = next(f for f in spec.fields if f.target == spec.primary_index)
        self._pk_column = primary.column
        self.fingerprint_salt = hashlib.blake2b(
            orjson.dumps([MAPPING_VERSION, spec.model_dump(mode="json"), max_record_bytes]), digest_size=16
        ).hexdigest()

    def source_columns(self, columns: Sequence[str]) -> list[str]:
        """The model columns a record depends on: a change anywhere else is not a change."""
        used = {f.column for f in self.spec.fields if f.column is not None} | set(self._liquid_columns)
        return [c for c in columns if c in used]

    def sql_index_columns(self, column_types: Mapping[str, str]) -> list[str] | None:
        """The column of each index (primary first) if SQL can compute every index value exactly
        (see _KEY_TEXT_IN_SQL), else None."""
        by_target = {f.target: f for f in self.spec.fields}
        columns = []
        for name in self.spec.index_names:
            field = by_target[name]
            if field.column is None or field.type not in _KEY_TEXT_IN_SQL.get(_base_type(column_types.get(field.column, "")), ()):
                return None
            columns.append(field.column)
        return columns

    def map_row(self, row: dict[str, Any], *, hashed: bool = True) -> MappedRecord:
        """The record of one row; raises RowRejected (with the pk when known) if it cannot be served.
        `hashed=False` leaves row_hash 0, for callers that compare something else."""
        try:
            return self._map(row, hashed)
        except RowRejected as error:
            if error.pk is None and self._pk_column is not None:
                error.pk = index_text(row.get(self._pk_column))
            raise

    def _map(self, row: dict[str, Any], hashed: bool) -> MappedRecord:
        record: dict[str, Any] = {target: row[column] for target, column in self._copied}
        scope = {name: liquid_scope(row[name]) for name in self._liquid_columns if name in row}
        for path, compute in self._steps:
            value = compute(row, scope)
            if len(path) == 1:
                record[path[0]] = value
            else:
                _set_nested(record, path, value)
        index_values = []
        for name in self._index_names:
            text = index_text(record.get(name))
            if text is None:
                if name == self.spec.primary_index:
                    raise RowRejected(f"primary index {name!r} is null or empty")
                continue
            index_values.append((name, text))
        try:
            body = encode_fields(record)
        except (TypeError, orjson.JSONEncodeError) as error:
            raise RowRejected(f"record cannot be encoded as JSON: {error}", index_values[0][1]) from None
        if len(body) > self.max_record_bytes:
            raise RowRejected(
                f"record is {len(body)} bytes, over the {self.max_record_bytes}-byte limit", index_values[0][1]
            )
        return record_of((index_values[0][1], body, hash_body(body) if hashed else 0, tuple(index_values), False))


def _base_type(name: str) -> str:
    """`VARCHAR(255)` → `VARCHAR`: a length does not change a value's text."""
    return name.split("(", 1)[0].strip()


def liquid_scope(value: Any) -> Any:
    """A column value as templates see it: decimals as numbers, since Liquid's math filters treat a
    Decimal as 0 (`{{ ltv | times: 2 }}` must double a DECIMAL column)."""
    if isinstance(value, dict):
        return {k: liquid_scope(v) for k, v in value.items()}
    if isinstance(value, list):
        return [liquid_scope(v) for v in value]
    if isinstance(value, Decimal):
        return json_default(value)
    return value


def _set_nested(record: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    node = record
    for part in path[:-1]:
        node = node.setdefault(part, {})
    node[path[-1]] = value


def _copied_as_is(field) -> bool:
    return field.column is not None and field.type is FieldType.auto and len(field.path) == 1


def _field_step(field) -> tuple[tuple[str, ...], Callable[[dict[str, Any]], Any]]:
    convert = _CONVERTERS[field.type]
    if field.column is not None:
        column = field.column
        if field.type is FieldType.auto:
            return field.path, lambda row, _scope: row[column]
        return field.path, lambda row, _scope: convert(row[column])
    template = parse_template(field.liquid)
    direct = direct_renderer(template)

    def render(_row: dict[str, Any], scope: dict[str, Any]) -> Any:
        try:
            text = direct(scope) if direct is not None else None
            if text is None:
                text = template.render(**scope)
        except LiquidError as error:
            raise RowRejected(f"Liquid error in field {field.target!r}: {str(error).splitlines()[0]}") from None
        return convert(text)

    return field.path, render


def _to_string(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, (datetime, date, time)):
        return value.isoformat()
    return str(value)


def _to_number(value: Any) -> int | float | None:
    if value is None or isinstance(value, (int, float)) and not isinstance(value, bool):
        return value
    text = str(value).strip()
    if text == "":
        return None
    try:
        number = Decimal(text)
    except ArithmeticError:
        raise RowRejected(f"{text!r} is not a number") from None
    if not number.is_finite():
        raise RowRejected(f"{text!r} is not a finite number")
    return int(number) if number == number.to_integral_value() and "." not in text and "e" not in text.lower() else float(number)


def _to_integer(value: Any) -> int | None:
    number = _to_number(value)
    if number is None or isinstance(number, int):
        return number
    if number.is_integer():
        return int(number)
    raise RowRejected(f"{value!r} is not an integer")


def _to_boolean(value: Any) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in {"true", "1", "yes", "t", "y"}:
        return True
    if text in {"false", "0", "no", "f", "n"}:
        return False
    if text == "":
        return None
    raise RowRejected(f"{value!r} is not a boolean")


def _to_json(value: Any) -> Any:
    if not isinstance(value, (str, bytes)):
        return value
    if value.strip() == "":
        return None
    try:
        return orjson.loads(value)
    except orjson.JSONDecodeError as error:
        raise RowRejected(f"invalid JSON: {error}") from None


_CONVERTERS: dict[FieldType, Callable[[Any], Any]] = {
    FieldType.auto: _to_string,  # a Liquid template always renders text
    FieldType.string: _to_string,
    FieldType.number: _to_number,
    FieldType.integer: _to_integer,
    FieldType.boolean: _to_boolean,
    FieldType.json: _to_json,
}
