"""Reading the model: the delta's rows are the values DuckDB itself gives Python, however fetched."""

from __future__ import annotations

import duckdb

from orchestration.sync.warehouse import Warehouse

TRICKY_TEXT = ["", 'quo"te', "back\\slash", "tab\tnl\ncr\r", "\x00nul\x1f\x7f", "é 漢字 😀", "\u2028\u2029", "</a>"]


def test_nested_columns_in_the_delta_equal_duckdbs_own_python_values(duckdb_url):
    path = duckdb_url.removeprefix("duckdb:///")
    conn = duckdb.connect(path)
    conn.execute("""
        create table model (
            id integer,
            summary struct(name varchar, n bigint, ok boolean, tags varchar[], deep struct(u uinteger, t tinyint)),
            lists struct(x varchar)[],
            dated struct(on_day date, score double),
            counters map(varchar, integer)
        )
    """)
    rows = []
    for i, text in enumerate(TRICKY_TEXT * 3):
        summary = None if i % 5 == 4 else {
            "name": None if i % 7 == 3 else text, "n": [0, -1, 2**63 - 1, -(2**63)][i % 4], "ok": [True, False, None][i % 3],
            "tags": [text, TRICKY_TEXT[-1 - i % 8]][: i % 3] if i % 4 else None, "deep": {"u": 2**32 - 1 - i, "t": -i},
        }
        rows.append((i, summary, [{"x": text}] * (i % 3), {"on_day": f"2024-01-{1 + i % 28:02d}", "score": i / 3},
                     {"key": [text], "value": [i]}))
    conn.executemany("insert into model values (?, ?, ?, ?, ?)", rows)
    native = {row[0]: row for row in conn.execute("select * from model").fetchall()}
    conn.close()

    warehouse = Warehouse(duckdb_url)
    delta = warehouse.iter_delta(
        "select * from model", index_columns=["id"], source_columns=["id", "summary", "lists", "dated", "counters"],
        snapshot=iter(()), salt="s", rewrite_all=False, chunk_size=7,
    )
    seen = 0
    for chunk in delta:
        for row in chunk:
            assert tuple(row.row.values()) == native[row.row["id"]]
            seen += 1
    warehouse.dispose()
    assert seen == len(native)
