"""`larder keys create/list/revoke`: the secret is printed once, stored hashed, never listed."""

from __future__ import annotations

import orjson
import pytest

from orchestration.cli import main
from orchestration.store.state import StateStore, hash_secret

PEOPLE = {
    "name": "people",
    "model": {"sql": "select 1 as id"},
    "collection": "people",
    "primary_index": "id",
    "fields": [{"column": "id"}],
}


@pytest.fixture
def config(project_factory, monkeypatch):
    project = project_factory([PEOPLE], collections={"customers": {}})
    monkeypatch.setenv("LARDER_CONFIG", str(project.path))
    return project


def test_create_prints_the_secret_once_and_stores_only_its_hash(config, capsys):
    assert main(["keys", "create", "--name", "braze", "--collections", "customers", "--regions", "test"]) == 0
    secret = capsys.readouterr().out.strip().splitlines()[-1]

    (key,) = StateStore(config.spec.state.url).list_keys()
    assert key.secret_hash == hash_secret(secret)
    assert key.collections == ("customers",)
    assert key.regions == ("test",)
    assert secret not in (config.path.parent / "state.db").read_bytes().decode("latin-1")


def test_list_shows_keys_and_their_status_but_never_secrets_or_hashes(config, capsys):
    main(["keys", "create", "--name", "app", "--quiet"])
    secret = capsys.readouterr().out.strip()
    main(["keys", "revoke", "app"])
    capsys.readouterr()

    assert main(["keys", "list"]) == 0
    output = capsys.readouterr().out

    listed = orjson.loads(output)
    assert listed["name"] == "app"
    assert listed["status"] == "revoked"
    assert secret not in output
    assert hash_secret(secret) not in output


def test_a_duplicate_name_or_an_unknown_revocation_is_an_error_with_exit_code_2(config, capsys):
    main(["keys", "create", "--name", "app", "--quiet"])

    assert main(["keys", "create", "--name", "app"]) == 2
    assert main(["keys", "revoke", "nobody"]) == 2
    assert "nobody" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["--collections", "people,nosuch"], "unknown collection 'nosuch' (configured: people, customers)"),
        (["--regions", "test,mars"], "unknown region 'mars' (configured: test)"),
    ],
)
def test_create_refuses_an_unknown_collection_or_region_naming_the_known_ones(config, capsys, option, message):
    assert main(["keys", "create", "--name", "typo", *option]) == 2

    assert message in capsys.readouterr().err
    store = StateStore(config.spec.state.url)
    store.create_all()
    assert store.list_keys() == []
