"""A warehouse reached through SQLAlchemy: Postgres and MariaDB/MySQL with the diff pushed down
(see pushdown.py), any other dialect read row by row.

Rows are read through the driver's own cursor (no SQLAlchemy row objects): a streaming one, so
memory stays flat. Each dialect's differences (quoting, the text of a key, the fingerprint, how to
stream, what its values need to match the other warehouses') are one small class here.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC
from itertools import islice
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from orchestration.store.keys import index_text
from orchestration.sync.warehouse.base import Duplicates, Snapshot, Warehouse, WarehouseError

Rows = Iterator[list[tuple]]


class SqlDialect:
    """What differs between SQL warehouses. This base is portable SQL with no pushdown."""

    fingerprints = False  # can compute a fingerprint of a row (and so diff in the warehouse)
    copies_csv = False  # can write a query's rows as CSV (copy_csv), much faster than fetching them
    keys_per_fetch = 1_000  # key values per query when fetching changed rows by key

    def __init__(self, engine: Engine):
        self._preparer = engine.dialect.identifier_preparer

    def on_connect(self, dbapi_connection) -> None:
        """Session settings every connection gets once (time zone and the like)."""

    def quote(self, name: str) -> str:
        return self._preparer.quote_identifier(name)

    def text(self, expression: str) -> str:
        """The value as text (for index keys: integers as digits, text as it is)."""
        return f"cast({expression} as varchar(4000))"

    def key_text(self, expression: str) -> str:
        """The index key text: the value as text, NULL when null or empty (as index_text says)."""
        return f"nullif({self.text(expression)}, '')"

    def is_empty(self, expression: str) -> str:
        return f"{self.text(expression)} = ''"

    def group_key(self, expression: str) -> str:
        """What to group by so that values compare exactly (case and trailing spaces count)."""
        return expression

    def fingerprint(self, columns: Sequence[tuple[str, str]], seed: int) -> str:
        """A signed 64-bit SQL hash of the (quoted column, type name) values, which differs whenever
        one of their records' values would (NULL and '' apart, 1.0 and 1 apart), seeded."""
        raise NotImplementedError

    def keys_filter(self, expression: str, count: int) -> str:
        """A condition true for rows whose `expression` is one of `count` key parameters."""
        return f"{expression} in ({', '.join(['%s'] * count)})"

    def key_parameters(self, keys: list[str]) -> tuple:
        return tuple(keys)

    exports_snapshots = False  # other connections can read in a transaction's view (export_snapshot)

    def begin_consistent_read(self, cursor) -> None:
        """Start a transaction whose reads all see the same state of the warehouse."""

    def export_snapshot(self, dbapi_connection) -> str:
        """The id of the view of the connection's consistent read, for `import_snapshot`."""
        raise NotImplementedError

    def import_snapshot(self, cursor, view: str) -> None:
        """Make the consistent read just begun see the exported view `view`."""
        raise NotImplementedError

    def hash_bucket(self, expression: str, buckets: int) -> str:
        """Which of `buckets` parts (0 to buckets - 1) a non-null text value falls in."""
        raise NotImplementedError

    def stream(self, dbapi_connection, sql: str, parameters: tuple | None, size: int) -> tuple[Callable[[], Any], Rows]:
        """Run a query; (a function giving the cursor's description once rows came, batches of rows)."""
        cursor = dbapi_connection.cursor()
        cursor.execute(sql, parameters) if parameters else cursor.execute(sql)

        def batches() -> Rows:
            try:
                while part := cursor.fetchmany(size):
                    yield list(part)
            finally:
                cursor.close()

        return lambda: cursor.description, batches()

    def copy_csv(self, dbapi_connection, sql: str, out) -> None:
        """Write the query's rows to the binary file `out` as CSV (NULL unquoted and empty, text
        quoted with "); only when `copies_csv`."""
        raise NotImplementedError

    def type_names(self, cursor) -> list[str]:
        return [str(column[1]).upper() for column in cursor.description]

    def row_reader(self, description) -> Callable[[tuple], dict[str, Any]]:
        names = [column[0] for column in description]
        return lambda row: dict(zip(names, row))


# Postgres types whose hash differs for any two values that read back differently.
_PG_HASHED_AS_IS = frozenset({"INT2", "INT4", "INT8", "BOOL", "DATE", "TIME", "TIMESTAMP", "TIMESTAMPTZ", "UUID", "BYTEA"})
_PG_TEXT = frozenset({"TEXT", "VARCHAR"})


class PostgresDialect(SqlDialect):
    """Postgres (psycopg 3): rows streamed in chunks (a plain query, so Postgres may scan in
    parallel), keys copied as CSV; the fingerprint is `hash_record_extended` (Postgres 14+) or
    `hashtextextended` of the row's text."""

    fingerprints = True
    copies_csv = True
    keys_per_fetch = 50_000  # one array parameter
    hashes_records = True  # hash_record_extended exists (Postgres 14+): known once connected

    def on_connect(self, dbapi_connection) -> None:
        from psycopg.types.json import set_json_loads

        # The text forms the fingerprint hashes and the values rows carry, fixed whatever the
        # server's defaults: timestamps with time zones in UTC, floats shortest-exact.
        with dbapi_connection.cursor() as cursor:
            cursor.execute("set time zone 'UTC'")
            cursor.execute("set datestyle = 'ISO, MDY'")
            cursor.execute("set intervalstyle = 'postgres'")
            cursor.execute("set extra_float_digits = 1")
        dbapi_connection.commit()
        self.hashes_records = dbapi_connection.info.server_version >= 140000
        set_json_loads(_loads_json, dbapi_connection)

    def text(self, expression: str) -> str:
        return f"cast({expression} as text)"

    def fingerprint(self, columns: Sequence[tuple[str, str]], seed: int) -> str:
        # Each column by its type's own hash where equal hashes mean equal text (twice as fast as
        # hashing the row's text); by its text where the type's equality is looser than its text
        # (numeric 1 = 1.0, float 0 = -0, jsonb, intervals, arrays and anything else).
        if not self.hashes_records:
            return f"hashtextextended(cast(row({', '.join(c for c, _ in columns)}) as text), {int(seed)})"
        parts = []
        for column, type_name in columns:
            base = type_name.split("(", 1)[0]
            if base in _PG_HASHED_AS_IS:
                parts.append(column)
            elif base in _PG_TEXT:
                parts.append(f'{column} collate "C"')  # bytes, whatever the column's collation
            else:
                parts.append(f'cast({column} as text) collate "C"')
        return f"hash_record_extended(row({', '.join(parts)}), {int(seed)})"

    def keys_filter(self, expression: str, count: int) -> str:
        return f"{expression} = any(%s)"

    def key_parameters(self, keys: list[str]) -> tuple:
        return (keys,)

    def begin_consistent_read(self, cursor) -> None:
        cursor.execute("set transaction isolation level repeatable read, read only")
        # The planner prices every returned row as costly to gather from parallel workers, so it
        # hashes a whole model in one process; in parallel (as many workers as the server allows
        # a query) the keys come a quarter sooner on two cores.
        cursor.execute("set local parallel_setup_cost = 0")
        cursor.execute("set local parallel_tuple_cost = 0.0001")

    exports_snapshots = True

    def export_snapshot(self, dbapi_connection) -> str:
        with dbapi_connection.cursor() as cursor:
            cursor.execute("select pg_export_snapshot()")
            return cursor.fetchone()[0]

    def import_snapshot(self, cursor, view: str) -> None:
        cursor.execute("set transaction snapshot '" + view.replace("'", "''") + "'")

    def hash_bucket(self, expression: str, buckets: int) -> str:
        return f"((hashtext({expression}) & 2147483647) % {int(buckets)})"

    def stream(self, dbapi_connection, sql: str, parameters: tuple | None, size: int) -> tuple[Callable[[], Any], Rows]:
        cursor = dbapi_connection.cursor()
        rows = cursor.stream(sql, parameters, size=size)

        def batches() -> Rows:
            try:
                while batch := list(islice(rows, size)):  # psycopg yields rows one by one
                    yield batch
            finally:
                cursor.close()

        return lambda: cursor.description, batches()

    def copy_csv(self, dbapi_connection, sql: str, out) -> None:
        # COPY hands over bytes, not Python rows (and the query may run in parallel).
        with dbapi_connection.cursor() as cursor, cursor.copy(f"copy ({sql}) to stdout with (format csv)") as copy:
            write = out.write
            for block in copy:
                write(block)

    def type_names(self, cursor) -> list[str]:
        return [column.type_display.upper() for column in cursor.description]


# MySQL protocol column types (pymysql.constants.FIELD_TYPE) by name; text types split on charset.
_MYSQL_TYPES = {
    0: "DECIMAL", 1: "TINYINT", 2: "SMALLINT", 3: "INT", 4: "FLOAT", 5: "DOUBLE", 6: "NULL", 7: "TIMESTAMP",
    8: "BIGINT", 9: "MEDIUMINT", 10: "DATE", 11: "TIME", 12: "DATETIME", 13: "YEAR", 15: "VARCHAR", 16: "BIT",
    245: "JSON", 246: "DECIMAL", 247: "ENUM", 248: "SET", 249: "TEXT", 250: "TEXT", 251: "TEXT", 252: "TEXT",
    253: "VARCHAR", 254: "CHAR", 255: "GEOMETRY",
}
_MYSQL_BINARY = {249: "BLOB", 250: "BLOB", 251: "BLOB", 252: "BLOB", 253: "VARBINARY", 254: "BINARY"}
_MYSQL_INTEGERS = frozenset({1, 2, 3, 8, 9})
_MYSQL_TIMESTAMP, _MYSQL_JSON = 7, 245
_MYSQL_BINARY_CHARSET = 63
_MYSQL_UNSIGNED_FLAG, _MYSQL_ENUM_FLAG, _MYSQL_SET_FLAG = 32, 256, 2048


class MySqlDialect(SqlDialect):
    """MariaDB and MySQL (PyMySQL): rows streamed by an unbuffered cursor; the fingerprint is
    `md5` of each column's QUOTE()d text. TIMESTAMP columns are instants, read in UTC."""

    fingerprints = True
    keys_per_fetch = 5_000

    def on_connect(self, dbapi_connection) -> None:
        with dbapi_connection.cursor() as cursor:
            cursor.execute("set time_zone = '+00:00'")
        dbapi_connection.commit()

    def text(self, expression: str) -> str:
        return f"cast({expression} as char)"

    def key_text(self, expression: str) -> str:
        # Not nullif(…, ''): with PAD SPACE collations ' ' = '', but ' ' is a key.
        text = self.text(expression)
        return f"case when char_length({text}) > 0 then {text} end"

    def is_empty(self, expression: str) -> str:
        return f"char_length({self.text(expression)}) = 0"

    def group_key(self, expression: str) -> str:
        return f"cast({expression} as binary)"

    def fingerprint(self, columns: Sequence[tuple[str, str]], seed: int) -> str:
        # QUOTE() escapes text and gives NULL as the bare word NULL: the joined text is exact.
        parts = ", ".join([f"'{int(seed)}'", *(f"quote({c})" for c, _ in columns)])
        return f"cast(conv(left(md5(concat_ws(',', {parts})), 15), 16, 10) as signed)"

    def begin_consistent_read(self, cursor) -> None:
        cursor.execute("set transaction isolation level repeatable read")
        cursor.execute("start transaction with consistent snapshot")

    def stream(self, dbapi_connection, sql: str, parameters: tuple | None, size: int) -> tuple[Callable[[], Any], Rows]:
        from pymysql.cursors import SSCursor

        cursor = dbapi_connection.cursor(SSCursor)
        cursor.execute(sql, parameters)

        def batches() -> Rows:
            try:
                while part := cursor.fetchmany(size):
                    yield list(part)
            finally:
                cursor.close()

        return lambda: cursor.description, batches()

    def type_names(self, cursor) -> list[str]:
        return [_mysql_type_name(field) for field in cursor._result.fields]

    def row_reader(self, description) -> Callable[[tuple], dict[str, Any]]:
        names = [column[0] for column in description]
        timestamps = [i for i, column in enumerate(description) if column[1] == _MYSQL_TIMESTAMP]
        documents = [i for i, column in enumerate(description) if column[1] == _MYSQL_JSON]
        if not timestamps and not documents:
            return lambda row: dict(zip(names, row))

        def as_dict(row: tuple) -> dict[str, Any]:
            values = list(row)
            for i in timestamps:
                if values[i] is not None:
                    values[i] = values[i].replace(tzinfo=UTC)
            for i in documents:
                if values[i] is not None:
                    values[i] = _loads_json(values[i])
            return dict(zip(names, values))

        return as_dict


def _mysql_type_name(field) -> str:
    code, flags = field.type_code, field.flags
    if flags & _MYSQL_ENUM_FLAG:
        return "ENUM"
    if flags & _MYSQL_SET_FLAG:
        return "SET"
    if field.charsetnr == _MYSQL_BINARY_CHARSET and code in _MYSQL_BINARY:
        return _MYSQL_BINARY[code]
    name = _MYSQL_TYPES.get(code, str(code))
    return f"{name} UNSIGNED" if code in _MYSQL_INTEGERS and flags & _MYSQL_UNSIGNED_FLAG else name


def _loads_json(text: str | bytes) -> Any:
    """orjson, as the DuckDB backend parses JSON; the standard parser for what orjson refuses."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)


def dialect_for(engine: Engine) -> SqlDialect:
    name = engine.dialect.name
    if name == "postgresql" and engine.dialect.driver == "psycopg":
        return PostgresDialect(engine)
    if name in ("mysql", "mariadb") and engine.dialect.driver == "pymysql":
        return MySqlDialect(engine)
    return SqlDialect(engine)


class SqlWarehouse(Warehouse):
    """A warehouse behind a SQLAlchemy URL (`postgresql+psycopg://…`, `mysql+pymysql://…`)."""

    def __init__(self, url: str, *, engine: Engine | None = None):
        self.url = url
        self.engine = engine or sa.create_engine(url, pool_pre_ping=True)
        self.dialect = dialect_for(self.engine)
        self.supports_delta = self.dialect.fingerprints
        sa.event.listen(self.engine, "connect", lambda dbapi_connection, _record: self.dialect.on_connect(dbapi_connection))
        self._errors = self.engine.dialect.loaded_dbapi.Error

    def columns(self, sql: str) -> list[str]:
        return list(self.column_types(sql))

    def column_types(self, sql: str) -> dict[str, str]:
        with self.connection() as connection:
            cursor = connection.cursor()
            try:
                cursor.execute(f"select * from ({sql}) as larder_model where 1 = 0")
                names = [column[0] for column in cursor.description]
                return dict(zip(names, self.dialect.type_names(cursor)))
            finally:
                cursor.close()

    def iter_chunks(self, sql: str, chunk_size: int) -> Iterator[list[dict[str, Any]]]:
        with self.connection() as connection:
            description, batches = self.dialect.stream(connection, sql, None, chunk_size)
            as_dict = None
            for batch in batches:
                as_dict = as_dict or self.dialect.row_reader(description())
                yield [as_dict(row) for row in batch]

    def rows_with_keys(self, sql: str, column: str, keys: Sequence[str], chunk_size: int) -> Iterator[list[dict[str, Any]]]:
        key = self.dialect.key_text(self.dialect.quote(column))
        query = f"select * from ({sql}) as larder_model where {self.dialect.keys_filter(key, len(keys))}"
        wanted = set(keys)
        with self.connection() as connection:
            description, batches = self.dialect.stream(connection, query, self.dialect.key_parameters(list(keys)),
                                                        chunk_size)
            as_dict = None
            for batch in batches:
                as_dict = as_dict or self.dialect.row_reader(description())
                # A collation may compare text loosely (MariaDB: case, trailing spaces): keys are exact.
                yield [row for row in map(as_dict, batch) if index_text(row[column]) in wanted]

    def iter_delta(self, sql: str, *, index_columns: Sequence[str], source_columns: Sequence[str], snapshot: Snapshot,
                   salt: str, rewrite_all: bool, chunk_size: int):
        from orchestration.sync.warehouse.pushdown import KeyedDelta, SplitKeyedDelta

        column_types = self.column_types(sql)
        # The seed carries the source columns' types: hashed text cannot tell 1 from '1'.
        seed_text = orjson.dumps([salt, [(c, column_types.get(c)) for c in source_columns]])
        seed = int.from_bytes(hashlib.blake2b(seed_text, digest_size=8).digest(), "big", signed=True)
        sources = [(c, column_types[c]) for c in source_columns]
        kind = SplitKeyedDelta if self.dialect.exports_snapshots else KeyedDelta
        return kind(self, sql, index_columns, sources, snapshot, seed, rewrite_all, chunk_size)

    def count(self, sql: str) -> int:
        return int(self._scalar(f"select count(*) from ({sql}) as larder_model"))

    def count_null_or_empty(self, sql: str, column: str) -> int:
        quoted = self.dialect.quote(column)
        return int(self._scalar(
            f"select count(*) from ({sql}) as larder_model where {quoted} is null or {self.dialect.is_empty(quoted)}"
        ))

    def duplicates(self, sql: str, column: str, samples: int) -> Duplicates:
        quoted = self.dialect.quote(column)
        key = self.dialect.group_key(quoted)
        grouped = (f"select min({quoted}) as value, count(*) as n from ({sql}) as larder_model "
                   f"where {quoted} is not null group by {key} having count(*) > 1")
        total = self._scalar(f"select count(*) from ({grouped}) as d")
        with self.connection() as connection:
            cursor = connection.cursor()
            cursor.execute(f"{grouped} order by n desc limit {int(samples)}")
            top = cursor.fetchall()
            cursor.close()
        return Duplicates(int(total), [(value, int(n)) for value, n in top])

    def preview(self, sql: str, limit: int = 100) -> list[dict[str, Any]]:
        with self.connection() as connection:
            cursor = connection.cursor()
            cursor.execute(f"select * from ({sql}) as larder_model limit {int(limit)}")
            as_dict = self.dialect.row_reader(cursor.description)
            rows = [as_dict(row) for row in cursor.fetchall()]
            cursor.close()
            return rows

    def dispose(self) -> None:
        self.engine.dispose()

    @contextmanager
    def connection(self, *, consistent: bool = False, view: str | None = None) -> Iterator[Any]:
        """A driver connection from the pool, rolled back when returned; driver errors become
        WarehouseError. `consistent`: every read in it sees the same state of the warehouse, the
        exported `view` of another connection's consistent read if given."""
        try:
            pooled = self.engine.raw_connection()
        except sa.exc.DBAPIError as error:
            raise WarehouseError(f"cannot connect to the warehouse: {error.orig}") from None
        try:
            connection = pooled.driver_connection
            if consistent:
                with connection.cursor() as cursor:
                    self.dialect.begin_consistent_read(cursor)
                    if view is not None:
                        self.dialect.import_snapshot(cursor, view)
            yield connection
        except self._errors as error:
            raise WarehouseError(f"model query failed: {error}") from None
        finally:
            try:
                pooled.rollback()
            except Exception:  # e.g. a stream left half read: the connection is not reused
                pooled.invalidate()
            pooled.close()

    def _scalar(self, sql: str) -> Any:
        with self.connection() as connection:
            cursor = connection.cursor()
            cursor.execute(sql)
            value = cursor.fetchone()[0]
            cursor.close()
            return value
