"""API keys through gunicorn: 401 without a valid key, 403 outside its scope, revocation, rate limits."""

from __future__ import annotations

import time

import pytest
import requests

from orchestration.cli import main

JANE = "/v1/collections/customer/records/id/12345"


@pytest.fixture(scope="module")
def eu(stack):
    return stack.serve("eu")


@pytest.fixture(scope="module")
def keys(stack, eu):
    """Scoped and limited keys, created once and waited for."""
    created = {
        "orders_only": stack.create_key("orders-only", collections=["orders"]),
        "eu_only": stack.create_key("eu-only", regions=["eu"]),
        "limited": stack.create_key("limited", rate_limit=1),
    }
    stack.wait_for_key(created["eu_only"], server=eu)
    stack.wait_for_key(created["limited"])
    return created


def test_a_request_without_a_key_answers_401_missing_api_key(stack):
    response = requests.get(stack.api.base + JANE, timeout=5)

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "missing_api_key"
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize(
    "authorization",
    ["Bearer lk_00000000_not-a-real-secret", "Bearer garbage", "Basic dXNlcjpwYXNz", "Bearer "],
)
def test_a_wrong_or_malformed_key_answers_401_invalid_api_key(stack, authorization):
    response = requests.get(stack.api.base + JANE, headers={"Authorization": authorization}, timeout=5)

    assert response.status_code == 401
    assert response.json()["error"]["code"] in {"invalid_api_key", "missing_api_key"}


def test_a_key_with_its_last_character_changed_is_refused(stack):
    forged = stack.key[:-1] + ("A" if stack.key[-1] != "A" else "B")

    assert stack.get(JANE, key=forged).status_code == 401


def test_a_key_scoped_to_collections_reads_those_and_gets_403_elsewhere(stack, keys):
    orders_only = keys["orders_only"]

    assert stack.get("/v1/collections/orders/records/order_id/1", key=orders_only).status_code == 200
    refused = stack.get(JANE, key=orders_only)
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "out_of_scope"
    assert stack.get("/v1/collections/customer/lineage", key=orders_only).status_code == 403
    assert stack.get("/v1/syncs/customer_profiles/runs", key=orders_only).status_code == 403
    listed = stack.get("/v1/collections", key=orders_only).json()["collections"]
    assert [c["name"] for c in listed] == ["orders"]


def test_a_key_scoped_to_a_region_is_refused_by_the_other_region(stack, eu, keys):
    eu_only = keys["eu_only"]

    assert stack.get(JANE, key=eu_only, server=eu).status_code == 200
    refused = stack.get(JANE, key=eu_only)
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "out_of_scope"


def test_each_region_serves_its_own_memcached_and_says_which_region_answered(stack, eu):
    us_answer = stack.get(JANE)
    eu_answer = stack.get(JANE, server=eu)

    assert us_answer.headers["X-Larder-Region"] == "us"
    assert eu_answer.headers["X-Larder-Region"] == "eu"
    assert eu_answer.content == us_answer.content


def test_a_revoked_key_is_refused_by_every_worker_within_5_seconds(fresh_stack, monkeypatch, capsys):
    monkeypatch.setenv("LARDER_CONFIG", str(fresh_stack.project.path))
    assert main(["keys", "create", "--name", "short-lived", "--quiet"]) == 0
    secret = capsys.readouterr().out.strip()
    fresh_stack.wait_for_key(secret)

    assert main(["keys", "revoke", "short-lived"]) == 0
    revoked_at = time.monotonic()
    while set(fresh_stack.statuses(JANE, key=secret)) != {401}:
        assert time.monotonic() - revoked_at < 5, "a worker still accepts the revoked key after 5 s"
        time.sleep(0.1)

    assert fresh_stack.get(JANE).status_code == 200  # other keys are unaffected


def test_a_rate_limited_key_gets_429_with_retry_after_and_unlimited_keys_do_not(stack, keys):
    limited = keys["limited"]

    answers = [stack.get(JANE, key=limited) for _ in range(12)]
    unlimited = [stack.get(JANE).status_code for _ in range(12)]

    refused = [a for a in answers if a.status_code == 429]
    assert refused, [a.status_code for a in answers]
    assert refused[0].json()["error"]["code"] == "rate_limited"
    assert int(refused[0].headers["Retry-After"]) >= 1
    # one token per second in each of the 2 workers: at most a burst of 2 then about 1 a second each
    assert sum(a.status_code == 200 for a in answers) <= 6
    assert set(unlimited) == {200}


def keyring_with_a_key(sqlite_url):
    from orchestration.store.state import StateStore
    from serving.auth import KeyRing

    state = StateStore(sqlite_url)
    state.create_all()
    _, secret = state.create_key("app")
    keyring = KeyRing(state, refresh_seconds=60)
    keyring.reload()
    return state, keyring, secret


def test_a_remembered_secret_is_refused_once_its_key_is_revoked(sqlite_url):
    state, keyring, secret = keyring_with_a_key(sqlite_url)
    assert keyring.authenticate(secret).name == "app"
    assert keyring.known(secret).name == "app"  # now remembered by this worker
    keyring.reload()
    assert keyring.known(secret).name == "app"  # and still, after a reload that finds the key active

    state.revoke_key("app")
    keyring.reload()
    assert keyring.known(secret) is None
    assert keyring.authenticate(secret) is None


def test_a_remembered_secret_does_not_open_the_door_to_a_near_miss(sqlite_url):
    _, keyring, secret = keyring_with_a_key(sqlite_url)
    assert keyring.authenticate(secret) is not None
    assert keyring.authenticate(secret[:-1] + ("A" if secret[-1] != "A" else "B")) is None
    assert keyring.authenticate(secret + " ") is None
