"""`larder keys create/list/revoke`: the secret is printed once, stored hashed, never listed."""

from __future__ import annotations

import orjson
import pytest

from orchestration.cli import main
from orchestration.store.state import StateStore, hash_secret


@pytest.fixture
def config(project_factory, monkeypatch):
    project = project_factory([])
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
