"""Generated models in DuckDB: `n` users × 10 columns, one of them a nested STRUCT.

Rows are deterministic in their id, so a run can be repeated and a 1 % change is exactly the
rows whose id is a multiple of 100.
"""

from __future__ import annotations

from pathlib import Path

import duckdb

TABLE = "bench_users"
COLUMNS = ("user_id", "email", "first_name", "last_name", "city", "score", "created_at", "active", "profile", "bio")
# A record without `bio` is about 275 bytes of JSON; `bio` pads it to the size wanted.
BASE_RECORD_BYTES = 275


def create_users(path: Path, rows: int, *, record_bytes: int) -> None:
    """(Re)create the model table with `rows` rows whose records are about `record_bytes` long."""
    padding = max(0, record_bytes - BASE_RECORD_BYTES)
    with duckdb.connect(str(path)) as con:
        con.execute("set enable_progress_bar = false")
        con.execute(f"""
            create or replace table {TABLE} as
            select
                i as user_id,
                'user' || i || '@example.com' as email,
                'First' || i as first_name,
                'Last' || (i % 9973) as last_name,
                ['Paris', 'Berlin', 'Lagos', 'Lima', 'Osaka'][1 + i % 5] as city,
                (i * 7919 % 100000) / 100.0 as score,
                timestamp '2024-01-01' + to_seconds(i % 31536000) as created_at,
                i % 3 = 0 as active,
                {{'plan': ['free', 'pro', 'family'][1 + i % 3], 'tier': i % 5,
                  'genres': ['rock', 'jazz', 'techno'], 'devices': {{'ios': i % 2 = 0, 'web': true}}}} as profile,
                repeat('lorem ipsum ', {padding} // 12 + 1)[1:{padding}] as bio
            from range({rows}) as t(i)
        """)


def change_one_percent(path: Path) -> int:
    """Change one row in a hundred (ids that are multiples of 100); returns how many changed."""
    with duckdb.connect(str(path)) as con:
        con.execute("set enable_progress_bar = false")
        con.execute(f"update {TABLE} set score = score + 1, city = city || '!' where user_id % 100 = 0")
        return int(con.execute(f"select count(*) from {TABLE} where user_id % 100 = 0").fetchall()[0][0])


def sync_spec(name: str, *, liquid: bool = False) -> dict:
    """A sync of the generated model: every column, primary index user_id, email as a second index."""
    fields: list[dict] = [{"column": column} for column in COLUMNS]
    if liquid:
        fields.append({"to": "greeting", "liquid": "Hi {{ first_name }}, your {{ profile.plan }} plan in {{ city }}"})
    return {
        "name": name,
        "model": {"sql": f"select * from {TABLE}"},
        "collection": name.replace("_", ""),
        "primary_index": "user_id",
        "indices": ["email"],
        "fields": fields,
        "delete": "delete",
    }


def create_users_postgres(url: str, rows: int, *, record_bytes: int) -> None:
    """The same model (same values, same records) as a Postgres table; `url` names its schema
    (search_path). `profile` is jsonb: its keys come out in the STRUCT's order."""
    padding = max(0, record_bytes - BASE_RECORD_BYTES)
    _postgres(
        url,
        f"drop table if exists {TABLE}",
        f"""
                create table {TABLE} as
                select
                    i as user_id,
                    'user' || i || '@example.com' as email,
                    'First' || i as first_name,
                    'Last' || (i % 9973) as last_name,
                    (array['Paris', 'Berlin', 'Lagos', 'Lima', 'Osaka'])[1 + i % 5] as city,
                    (i * 7919 % 100000) / 100.0::double precision as score,
                    timestamp '2024-01-01' + make_interval(secs => i % 31536000) as created_at,
                    i % 3 = 0 as active,
                    jsonb_build_object('plan', (array['free', 'pro', 'family'])[1 + i % 3], 'tier', i % 5,
                                       'genres', jsonb_build_array('rock', 'jazz', 'techno'),
                                       'devices', jsonb_build_object('ios', i % 2 = 0, 'web', true)) as profile,
                    left(repeat('lorem ipsum ', {padding} / 12 + 1), {padding}) as bio
                from generate_series(0::bigint, {rows - 1}) as t(i)
        """,
        f"analyze {TABLE}",
    )


def change_one_percent_postgres(url: str) -> None:
    """`change_one_percent` on the Postgres model."""
    _postgres(url, f"update {TABLE} set score = score + 1, city = city || '!' where user_id % 100 = 0")


def _postgres(url: str, *statements: str) -> None:
    """Run statements in one transaction, through the driver (no parameters, so % is just %)."""
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    try:
        connection = engine.raw_connection()
        try:
            with connection.cursor() as cursor:
                for statement in statements:
                    cursor.execute(statement)
            connection.commit()
        finally:
            connection.close()
    finally:
        engine.dispose()
