"""The API in process (falcon.testing) with the real collaborators of the shared stack: its memcached,
its SQLite state, its synced records. Each answer is checked as the contract states it: status, body
(every field of serving/contract.py's types, no other) and headers. What needs a real server (the
proxy, workers, slow clients, raw request bytes) is tested through `larder serve` elsewhere.
"""

from __future__ import annotations

import logging
import typing

import falcon.testing
import pytest

from orchestration.store.cache import RecordCache
from orchestration.store.keys import record_key
from serving import contract
from serving.app import create_app
from serving.auth import KeyRing
from serving.state_reads import api_state_store
from tests.serving.conftest import CUSTOMERS
from tests.support import free_port

JANE = "/v1/collections/customer/records/id/12345"
BATCH = "/v1/collections/customer/records/id"


def fields(model: type) -> set[str]:
    return set(typing.get_type_hints(model))


def assert_shaped(answer: dict, model: type) -> None:
    """`answer` has every required field of `model`, and no field it does not declare."""
    assert model.__required_keys__ <= set(answer) <= fields(model), (set(answer), model.__name__)


def assert_error(result: falcon.testing.Result, status: int, code: str) -> dict:
    assert result.status_code == status, result.text
    assert result.headers["Content-Type"] == "application/json"
    assert set(result.json) == {"error"}
    assert set(result.json["error"]) == {"code", "message"}
    assert result.json["error"]["code"] == code
    assert result.json["error"]["message"]
    return result.json["error"]


@pytest.fixture(scope="module")
def keyring(stack):
    keyring = KeyRing(stack.state, refresh_seconds=3600)
    keyring.reload()
    return keyring


@pytest.fixture(scope="module")
def client(stack, keyring):
    app = create_app(stack.project, "us", state=stack.state, keyring=keyring)
    return falcon.testing.TestClient(app, headers={"Authorization": f"Bearer {stack.key}"})


def scoped_key(stack, keyring, **scope) -> dict[str, str]:
    secret = stack.create_key(f"in-process-{'-'.join(scope)}", **scope)
    keyring.reload()
    return {"Authorization": f"Bearer {secret}"}


def test_a_lookup_answers_the_record_with_its_headers(client, stack):
    result = client.simulate_get(JANE)

    assert result.status_code == 200
    assert result.json["full_name"] == "Jane Doe"
    assert result.headers["Content-Type"] == "application/json"
    assert result.headers["X-Larder-Source"] == contract.Source.CACHE
    assert result.headers["X-Larder-Region"] == "us"
    assert result.headers["Cache-Control"] == "max-age=600"
    assert result.headers["X-Larder-Synced-At"].isdigit()
    unchanged = client.simulate_get(JANE, headers={"If-None-Match": result.headers["ETag"]})
    assert unchanged.status_code == 304
    assert unchanged.content == b""


@pytest.mark.parametrize(
    ("path", "status", "code"),
    [
        ("/v1/collections/nope/records/id/1", 404, "unknown_collection"),
        ("/v1/collections/customer/records/sku/1", 404, "unknown_index"),
        ("/v1/collections/customer/records/id/999999", 404, "record_not_found"),
        ("/v1/collections/nope/lineage", 404, "unknown_collection"),
        ("/v1/syncs/nope/runs", 404, "unknown_sync"),
        ("/v1/syncs/orders/runs?limit=0", 400, "invalid_parameter"),
        ("/v1/syncs/orders/runs?limt=5", 400, "invalid_parameter"),
        (BATCH, 400, "invalid_values"),
        (BATCH + "?values=1&value=2", 400, "invalid_parameter"),
        ("/nowhere", 404, "not_found"),
    ],
)
def test_what_does_not_exist_or_is_malformed_answers_its_code(client, path, status, code):
    assert_error(client.simulate_get(path), status, code)


def test_unknown_index_names_the_collections_indices(client):
    error = assert_error(client.simulate_get("/v1/collections/customer/records/sku/1"), 404, "unknown_index")

    assert "(indices: id, email)" in error["message"]


def test_a_method_a_route_does_not_take_answers_405_method_not_allowed(client):
    assert_error(client.simulate_delete(JANE), 405, "method_not_allowed")


@pytest.mark.parametrize(
    ("headers", "code"),
    [({}, "missing_api_key"), ({"Authorization": "Bearer lk_00000000_nope"}, "invalid_api_key"),
     ({"Authorization": "Basic dXNlcjpwYXNz"}, "invalid_api_key")],
)
def test_a_missing_or_invalid_key_answers_401_with_www_authenticate(client, headers, code):
    result = client.simulate_get(JANE, headers={"Authorization": "", **headers})

    assert_error(result, 401, code)
    assert result.headers["WWW-Authenticate"].startswith('Bearer realm="larder"')


def test_a_key_scoped_elsewhere_answers_403_out_of_scope(client, stack, keyring):
    orders_only = scoped_key(stack, keyring, collections=["orders"])
    eu_only = scoped_key(stack, keyring, regions=["eu"])

    assert client.simulate_get("/v1/collections/orders/records/order_id/1", headers=orders_only).status_code == 200
    assert "'customer'" in assert_error(client.simulate_get(JANE, headers=orders_only), 403, "out_of_scope")["message"]
    assert "'us'" in assert_error(client.simulate_get(JANE, headers=eu_only), 403, "out_of_scope")["message"]
    listed = client.simulate_get("/v1/collections", headers=orders_only).json
    assert [c["name"] for c in listed["collections"]] == ["orders"]


def test_a_key_over_its_rate_answers_429_with_retry_after(client, stack, keyring):
    # One request per 100 s window: of three requests, one window boundary at most lets two through.
    limited = scoped_key(stack, keyring, rate_limit=0.01)

    results = [client.simulate_get(JANE, headers=limited) for _ in range(3)]

    refused = [result for result in results if result.status_code == 429]
    assert refused, [result.status_code for result in results]
    assert_error(refused[0], 429, "rate_limited")
    assert 1 <= int(refused[0].headers["Retry-After"]) <= 100


def test_a_batch_answers_records_by_value_and_the_missing(client):
    result = client.simulate_get(BATCH, params={"values": ["12345", "2", "404", "2"]})

    assert result.status_code == 200
    assert_shaped(result.json, contract.BatchAnswer)
    assert result.json["records"]["12345"]["full_name"] == "Jane Doe"
    assert set(result.json["records"]) == {"12345", "2"}
    assert result.json["missing"] == ["404"]
    assert result.headers["X-Larder-Source"] == "state"  # '404' was asked of the state
    assert result.headers["X-Larder-Region"] == "us"
    assert result.headers["Cache-Control"] == "max-age=600"


@pytest.mark.parametrize(
    ("kwargs", "status", "code"),
    [
        ({"json": {"values": ["1"], "limit": 5}}, 400, "unknown_property"),
        ({"json": {"values": [str(i) for i in range(contract.MAX_BATCH_VALUES + 1)]}}, 400, "invalid_values"),
        ({"json": {"values": [True]}}, 400, "invalid_values"),
        ({"json": ["1"]}, 400, "invalid_values"),
        ({"body": b"{not json", "content_type": "application/json"}, 400, "bad_request"),
        ({"body": b"values=1", "content_type": "application/x-www-form-urlencoded"}, 415, "unsupported_media_type"),
    ],
    ids=["unknown-property", "too-many", "boolean", "not-an-object", "not-json", "a-form"],
)
def test_a_posted_batch_that_breaks_the_schema_answers_its_code(client, kwargs, status, code):
    assert_error(client.simulate_post(BATCH, **kwargs), status, code)


def test_a_posted_batch_takes_strings_and_integers(client):
    result = client.simulate_post("/v1/collections/customer/records/email",
                                  json={"values": ["zoë müller@example.com", "x@y.z"]})
    by_id = client.simulate_post(BATCH, json={"values": [12345]})

    assert result.json["records"]["zoë müller@example.com"]["id"] == 2
    assert result.json["missing"] == ["x@y.z"]
    assert list(by_id.json["records"]) == ["12345"]


def test_collections_lineage_and_runs_have_exactly_the_contracts_fields(client):
    collections = client.simulate_get("/v1/collections").json
    lineage = client.simulate_get("/v1/collections/customer/lineage").json
    runs = client.simulate_get("/v1/syncs/customer_profiles/runs?limit=1").json

    assert_shaped(collections, contract.Collections)
    for collection in collections["collections"]:
        assert_shaped(collection, contract.Collection)
    assert_shaped(lineage, contract.Lineage)
    (sync,) = lineage["syncs"]
    assert_shaped(sync, contract.SyncLineage)
    assert_shaped(sync["model"], contract.Model)
    assert sync["delete"] == contract.DeleteBehaviour.delete
    assert_shaped(sync["last_run"], contract.Run)
    assert "rejection_samples" not in sync["last_run"]
    for field in lineage["fields"]:
        assert_shaped(field, contract.FieldLineage)
    assert_shaped(runs, contract.SyncRuns)
    (run,) = runs["runs"]
    assert fields(contract.Run) == set(run)  # a sync's run list carries the rejection samples too
    assert run["status"] in set(contract.RunStatus)
    assert run["id"] == sync["last_run"]["id"]  # the newest run, whatever other tests left behind
    assert sync["last_successful_run"]["status"] == contract.RunStatus.succeeded


def test_healthz_and_readyz_answer_without_a_key(client):
    health = client.simulate_get("/healthz", headers={"Authorization": ""})
    ready = client.simulate_get("/readyz", headers={"Authorization": ""})

    assert health.json == {"status": "ok"}
    assert ready.json == {"status": "ready", "region": "us"}


def test_with_the_cache_unreachable_readyz_is_503_not_ready_and_records_come_from_state(stack, keyring):
    down = RecordCache([f"127.0.0.1:{free_port()}"])
    app = create_app(stack.project, "us", state=stack.state, keyring=keyring, cache=down)
    client = falcon.testing.TestClient(app, headers={"Authorization": f"Bearer {stack.key}"})

    assert_error(client.simulate_get("/readyz"), 503, "not_ready")
    found = client.simulate_get(JANE)
    assert found.status_code == 200
    assert found.json["full_name"] == "Jane Doe"
    assert found.headers["X-Larder-Source"] == contract.Source.STATE_CACHE_DOWN
    batch = client.simulate_get(BATCH, params={"values": ["2"]})
    assert batch.headers["X-Larder-Source"] == "state-cache-down"
    assert batch.json["records"]["2"]["email"] == CUSTOMERS[1][1]


def test_with_the_state_unreadable_a_miss_answers_503_state_unavailable_and_hits_are_served(stack, keyring, tmp_path):
    unreadable = api_state_store(f"sqlite:///{tmp_path / 'no-such-folder' / 'state.db'}")
    app = create_app(stack.project, "us", state=unreadable, keyring=keyring)
    client = falcon.testing.TestClient(app, headers={"Authorization": f"Bearer {stack.key}"})

    assert client.simulate_get(JANE).status_code == 200  # from the cache
    for path in ("/v1/collections/customer/records/id/999999", "/v1/syncs/orders/runs",
                 "/v1/collections/customer/lineage"):
        result = client.simulate_get(path)
        assert_error(result, 503, "state_unavailable")
        assert result.headers["Retry-After"] == "1"
    unreadable.dispose()


def test_a_record_the_api_cannot_read_answers_500_internal_error_in_json_and_is_logged(client, stack, caplog):
    # A value no sync writes (not an envelope): reading it is a bug to fix, not a store outage.
    cache = RecordCache([stack.us.server])
    key = record_key("customer", "id", "777777")
    cache.add(key, b"not an envelope")
    try:
        with caplog.at_level(logging.ERROR, logger="larder.api"):
            result = client.simulate_get("/v1/collections/customer/records/id/777777")
    finally:
        cache.delete_many([key])

    error = assert_error(result, 500, "internal_error")
    assert "envelope" not in error["message"]  # no internals in the answer
    assert "unhandled error on GET /v1/collections/{collection}/records" in caplog.text
