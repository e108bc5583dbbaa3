"""Delete behaviours in a collection merged from two syncs, checked in the cache, through the API's
state fallback (a flushed memcached) and after a rehydrate.

`profiles` owns the `email` index, `scores` the `code` index; both share the primary `id`.
"""

from __future__ import annotations

import uuid

import pytest
from falcon import testing

from orchestration.store.keys import record_key
from orchestration.store.state import StateStore
from orchestration.sync import Services, rehydrate_region
from serving.app import create_app
from serving.auth import KeyRing
from tests.sync.conftest import sync_config

PROFILE_COLUMNS = "id integer, name varchar, email varchar"
SCORE_COLUMNS = "id integer, score integer, code varchar"


def profiles(delete: str) -> dict:
    return sync_config("profiles", model="select * from profiles", indices=["email"], delete=delete,
                       fields=[{"column": "id"}, {"column": "name"}, {"column": "email"}])


def scores(delete: str = "clear") -> dict:
    return sync_config("scores", model="select * from scores", indices=["code"], delete=delete,
                       fields=[{"column": "id"}, {"column": "score", "to": "stats.score"}, {"column": "code"}])


@pytest.fixture(params=["sqlite", "postgres"])
def state_url(request) -> str:
    return request.getfixturevalue(f"{request.param}_url")


def _tables(harness, profile_rows, score_rows) -> None:
    harness.table("profiles", PROFILE_COLUMNS, profile_rows)
    harness.table("scores", SCORE_COLUMNS, score_rows)


ANN, BOB = (1, "Ann", "ann@x"), (2, "Bob", "bob@x")
ANN_SCORE, BOB_SCORE = (1, 10, "c1"), (2, 20, "c2")


def _lookups(harness, *values: tuple[str, str]) -> list[dict | None]:
    return [harness.get("people", index, value) for index, value in values]


def _api(harness) -> testing.TestClient:
    """The region's API in process (its real cache and state), with a fresh key."""
    state = StateStore(harness.project.spec.state.url)
    state.create_all()
    _, secret = state.create_key(f"test-{uuid.uuid4().hex[:8]}")
    keyring = KeyRing(state, refresh_seconds=3600)  # loaded once: no refresh thread outlives the test
    keyring.reload()
    app = create_app(harness.project, "main", state=state, keyring=keyring)
    return testing.TestClient(app, headers={"Authorization": f"Bearer {secret}"})


def _api_get(client: testing.TestClient, index: str, value: str):
    return client.simulate_get(f"/v1/collections/people/records/{index}/{value}")


ANN_KEYS = (("id", "1"), ("email", "ann@x"), ("code", "c1"))


def test_a_record_deleted_by_one_sync_stays_deleted_whatever_the_other_sync_does(harness, memcached, state_url):
    _tables(harness, [ANN, BOB], [ANN_SCORE, BOB_SCORE])
    harness.configure(profiles("delete"), scores(), state_url=state_url)
    harness.run("profiles")
    harness.run("scores")
    _tables(harness, [BOB], [ANN_SCORE, BOB_SCORE])
    assert harness.run("profiles").counts["removed"] == 1
    assert _lookups(harness, *ANN_KEYS) == [None, None, None]

    report = harness.run("scores")  # no change: its fields of record 1 are still in its model
    assert report.counts["unchanged"] == 2 and report.counts["written"] == 0
    assert _lookups(harness, *ANN_KEYS) == [None, None, None]
    harness.run("scores", full_resync=True)
    assert _lookups(harness, *ANN_KEYS) == [None, None, None]

    memcached.flush()  # every lookup now misses the cache and is answered from the state
    client = _api(harness)
    for index, value in ANN_KEYS:
        answer = _api_get(client, index, value)
        assert answer.status_code == 404 and answer.json["error"]["code"] == "record_not_found", (index, value)
    bob = _api_get(client, "code", "c2")
    assert bob.json["stats"] == {"score": 20} and bob.headers["X-Larder-Source"] == "state"
    state = StateStore(state_url)
    keys = [record_key("people", index, value) for index, value in ANN_KEYS]
    assert state.records_by_keys(keys, ("profiles", "scores")) == {}
    state.dispose()

    services = Services(harness.project)
    try:
        rehydrate_region(services, "main")
    finally:
        services.close()
    assert _lookups(harness, *ANN_KEYS) == [None, None, None]
    assert harness.get("people", "id", 2) == {"id": 2, "name": "Bob", "email": "bob@x", "stats": {"score": 20}, "code": "c2"}


def test_a_deleted_record_comes_back_composed_from_every_sync_when_its_row_returns(harness, state_url):
    _tables(harness, [ANN, BOB], [ANN_SCORE, BOB_SCORE])
    harness.configure(profiles("delete"), scores(), state_url=state_url)
    harness.run("profiles")
    harness.run("scores")
    _tables(harness, [BOB], [ANN_SCORE, BOB_SCORE])
    harness.run("profiles")

    _tables(harness, [BOB], [(1, 11, "c1-new"), BOB_SCORE])  # scores changes record 1 while it is deleted
    assert harness.run("scores").counts["changed"] == 1
    assert _lookups(harness, ("id", "1"), ("code", "c1"), ("code", "c1-new")) == [None, None, None]

    _tables(harness, [(1, "Ann again", "ann@x"), BOB], [(1, 11, "c1-new"), BOB_SCORE])
    assert harness.run("profiles").counts["added"] == 1  # only profiles runs: scores' fields come from state
    back = {"id": 1, "name": "Ann again", "email": "ann@x", "stats": {"score": 11}, "code": "c1-new"}
    assert _lookups(harness, ("id", "1"), ("email", "ann@x"), ("code", "c1-new")) == [back, back, back]
    assert harness.get("people", "code", "c1") is None


def test_a_record_deleted_by_two_syncs_returns_only_once_both_have_its_row_again(harness):
    _tables(harness, [ANN], [ANN_SCORE])
    harness.configure(profiles("delete"), scores("delete"))
    harness.run("profiles")
    harness.run("scores")
    _tables(harness, [], [])
    harness.run("profiles")
    harness.run("scores")
    _tables(harness, [ANN], [])
    harness.run("profiles")
    assert harness.get("people", "id", 1) is None  # scores deleted it too and does not have it back
    _tables(harness, [ANN], [ANN_SCORE])
    harness.run("scores")
    assert harness.get("people", "email", "ann@x") == {"id": 1, "name": "Ann", "email": "ann@x",
                                                       "stats": {"score": 10}, "code": "c1"}


def test_clear_in_a_merged_collection_removes_only_the_syncs_fields_and_its_indices(harness, memcached):
    _tables(harness, [ANN, BOB], [ANN_SCORE, BOB_SCORE])
    harness.configure(profiles("clear"), scores())
    harness.run("profiles")
    harness.run("scores")
    _tables(harness, [BOB], [ANN_SCORE, BOB_SCORE])
    report = harness.run("profiles")
    assert report.counts["removed"] == 1
    rest = {"id": 1, "stats": {"score": 10}, "code": "c1"}
    assert _lookups(harness, *ANN_KEYS) == [rest, None, rest]
    harness.run("scores")
    assert _lookups(harness, *ANN_KEYS) == [rest, None, rest]
    memcached.flush()
    client = _api(harness)
    assert _api_get(client, "id", "1").json == rest
    gone = _api_get(client, "email", "ann@x")  # the index went with the sync's fields; the collection still has it
    assert gone.status_code == 404 and gone.json["error"]["code"] == "record_not_found"

    _tables(harness, [ANN, BOB], [ANN_SCORE, BOB_SCORE])
    harness.run("profiles")
    assert harness.get("people", "email", "ann@x") == {"id": 1, "name": "Ann", "email": "ann@x", **rest}


def test_keep_in_a_merged_collection_serves_the_syncs_last_fields_beside_the_others_current_ones(harness):
    _tables(harness, [ANN, BOB], [ANN_SCORE, BOB_SCORE])
    harness.configure(profiles("keep"), scores())
    harness.run("profiles")
    harness.run("scores")
    _tables(harness, [BOB], [(1, 11, "c1"), BOB_SCORE])
    report = harness.run("profiles")
    assert report.counts["kept"] == 1 and report.counts["removed"] == 0
    harness.run("scores")
    kept = {"id": 1, "name": "Ann", "email": "ann@x", "stats": {"score": 11}, "code": "c1"}
    assert _lookups(harness, *ANN_KEYS) == [kept, kept, kept]
