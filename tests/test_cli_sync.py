"""The `larder validate`, `sync` and `rehydrate` commands on real DuckDB, SQLite and memcached."""

from __future__ import annotations

import pytest

from orchestration.cli import main
from orchestration.store.keys import record_key
from orchestration.store.state import ChunkTarget, IndexKey, RecordWrite, StateStore, prepare_write
from tests.sync.conftest import SyncHarness, dump_keys, sync_config

COLUMNS = "id integer, name varchar, email varchar"
SYNC = sync_config(indices=["email"], fields=[{"column": "id"}, {"column": "name"}, {"column": "email"}])


@pytest.fixture
def cli(project_factory, duckdb_url, memcached):
    harness = SyncHarness(project_factory, duckdb_url, {"main": [memcached.server]})
    yield harness
    harness.close()


def test_validate_checks_mapped_columns_against_the_warehouse(cli, capsys):
    cli.table("people", COLUMNS, [(1, "Ann", "a@x")])
    cli.configure(SYNC)
    assert main(["--config", str(cli.project.path), "validate"]) == 0
    assert "sync people: every mapped column is in the model" in capsys.readouterr().out
    cli.configure({**SYNC, "fields": [{"column": "id"}, {"column": "email"}, {"column": "nmae"}]})
    assert main(["--config", str(cli.project.path), "validate"]) == 2
    assert "syncs/people.yaml: fields[2].column: unknown column 'nmae'" in capsys.readouterr().err
    assert main(["--config", str(cli.project.path), "validate", "--offline"]) == 0


def test_validate_fails_when_a_model_cannot_be_read_naming_the_sync_and_model(cli, capsys):
    cli.table("other", COLUMNS, [])
    cli.configure(SYNC)  # its model reads the table `people`, which does not exist

    assert main(["--config", str(cli.project.path), "validate"]) == 1
    err = capsys.readouterr().err
    assert "sync people: inline SQL model of sync 'people' cannot be read: model query failed: Catalog Error" in err
    assert main(["--config", str(cli.project.path), "validate", "--offline"]) == 0


def test_a_typo_in_an_indexed_fields_column_is_reported_as_an_unknown_column(cli, capsys):
    cli.table("people", COLUMNS, [(1, "Ann", "a@x")])
    cli.configure(SYNC)
    (cli.project.path.parent / "syncs" / "people.yaml").write_text(
        "name: people\nmodel: {sql: select * from people}\ncollection: people\nprimary_index: id\n"
        "indices: [email]\nfields: [{column: id}, {column: name}, {column: emial}]\n"
    )

    assert main(["--config", str(cli.project.path), "validate"]) == 2
    online = capsys.readouterr().err
    assert main(["--config", str(cli.project.path), "validate", "--offline"]) == 2
    offline = capsys.readouterr().err

    assert ("syncs/people.yaml: fields[2].column: unknown column 'emial' in inline SQL model of sync 'people' "
            "(columns: email, id, name)") in online
    assert "not a mapped top-level field" not in online
    # Without the warehouse the column cannot be checked; the message points at the likely typo.
    assert "syncs/people.yaml: indices: index 'email' is not a mapped top-level field" in offline
    assert "fields[2] maps column 'emial' to 'emial': a typo of 'email'?" in offline


def test_validate_reports_a_config_error_with_file_and_field(cli, capsys):
    cli.configure(SYNC)
    (cli.project.path.parent / "syncs" / "people.yaml").write_text(
        "name: people\nmodel: {sql: select 1}\ncollection: people!\nprimary_index: id\nfields: [{column: id}]\n"
    )
    assert main(["--config", str(cli.project.path), "validate"]) == 2
    assert "syncs/people.yaml: collection: 'people!' must be 1-64 alphanumeric" in capsys.readouterr().err


def test_a_field_nested_in_another_field_is_refused_before_anything_is_written(cli, capsys):
    cli.table("people", COLUMNS, [(1, "Ann", "a@x")])
    cli.configure(SYNC)
    for fields in (["orders", "orders.first"], ["orders.first", "orders"]):
        (cli.project.path.parent / "syncs" / "people.yaml").write_text(
            "name: people\nmodel: {sql: select * from people}\ncollection: people\nprimary_index: id\nfields:\n"
            f"  - column: id\n  - {{column: name, to: {fields[0]}}}\n  - {{column: email, to: {fields[1]}}}\n"
        )

        assert main(["--config", str(cli.project.path), "sync"]) == 2

        assert "syncs/people.yaml: fields[2].to: field " in capsys.readouterr().err
    state = StateStore(cli.project.spec.state.url)
    state.create_all()
    assert state.recent_runs("people") == []  # no run started
    state.dispose()
    assert cli.get("people", "id", "1") is None


def test_sync_command_runs_syncs_and_prints_counts(cli, capsys):
    cli.table("people", COLUMNS, [(1, "Ann", "a@x"), (2, "Bob", "b@x")])
    cli.configure(SYNC)
    assert main(["--config", str(cli.project.path), "sync"]) == 0
    out = capsys.readouterr()
    assert "sync people: succeeded" in out.out and "added 2" in out.out
    assert "people scan: rows_read 2" in out.err  # progress goes to stderr
    assert cli.get("people", "email", "b@x") == {"id": 2, "name": "Bob", "email": "b@x"}


def test_sync_command_fails_with_exit_1_and_the_reason(cli, capsys):
    cli.table("people", COLUMNS, [(None, "Ann", "a@x")])
    cli.configure(SYNC)
    assert main(["--config", str(cli.project.path), "sync", "people"]) == 1
    assert "over the 10.0% allowed; nothing was written" in capsys.readouterr().err


def test_rehydrate_rebuilds_exactly_what_was_served_after_a_restart(cli, memcached, capsys):
    cli.table("people", COLUMNS, [(i, f"P{i}", f"{i}@x" if i % 3 else None) for i in range(500)])
    cli.configure(SYNC)
    cli.run("people")
    cli.table("people", COLUMNS, [(i, f"Q{i}", f"{i}@y") for i in range(100, 600)])
    cli.run("people")
    before = {key: cli.cache().get(key) for key in dump_keys(memcached.server)}
    assert len(before) == 1_000  # 500 records under id and email

    memcached.restart()
    assert dump_keys(memcached.server) == set()
    assert main(["--config", str(cli.project.path), "rehydrate", "--region", "main"]) == 0
    assert "rehydrated region main: 500 records under 1000 keys" in capsys.readouterr().out
    after = {key: cli.cache().get(key) for key in dump_keys(memcached.server) if not key.startswith("L1:_larder")}
    assert after == before


def test_rehydrate_after_a_flush_also_replays_pending_journal_work(cli, memcached):
    cli.table("people", COLUMNS, [(1, "Ann", "a@x")])
    cli.configure(SYNC)
    run_id = cli.run("people").run_id
    state = StateStore(cli.project.spec.state.url)
    # a crash after this commit, before the cache heard of it (no cache_written)
    state.commit_chunk(prepare_write(ChunkTarget(run_id, "people", "people", ("people",)), [
        RecordWrite("1", b'{"id":1,"name":"Ann v2","email":"a@x"}', 0,
                    [IndexKey(record_key("people", "id", "1"), ""),
                     IndexKey(record_key("people", "email", "a@x"), "people")], is_new=False),
    ]))
    memcached.flush()
    assert main(["--config", str(cli.project.path), "rehydrate", "--region", "main"]) == 0
    assert cli.get("people", "email", "a@x")["name"] == "Ann v2"
    assert state.pending_journal() == [] and state.owed_collections("main") == set()
    cli.run("people")
    assert cli.get("people", "email", "a@x")["name"] == "Ann"  # the model still says Ann
    state.dispose()


def test_rehydrate_unknown_region_exits_2(cli, capsys):
    cli.configure(SYNC)
    assert main(["--config", str(cli.project.path), "rehydrate", "--region", "mars"]) == 2
    assert "unknown region 'mars'" in capsys.readouterr().err
