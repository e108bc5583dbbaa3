"""API keys through gunicorn: 401 without a valid key, 403 outside its scope, revocation, rate limits."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from orchestration.cli import main
from tests.serving.conftest import Stack

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
    assert response.json()["error"]["code"] == "invalid_api_key"  # a header was sent: not missing


def test_a_key_with_its_last_character_changed_is_refused(stack):
    forged = stack.key[:-1] + ("A" if stack.key[-1] != "A" else "B")

    refused = stack.get(JANE, key=forged)
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "invalid_api_key"


def test_a_key_scoped_to_collections_reads_those_and_gets_403_elsewhere(stack, keys):
    orders_only = keys["orders_only"]

    assert stack.get("/v1/collections/orders/records/order_id/1", key=orders_only).status_code == 200
    refused = stack.get(JANE, key=orders_only)
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "out_of_scope"
    for path in ("/v1/collections/customer/lineage", "/v1/syncs/customer_profiles/runs"):
        refused = stack.get(path, key=orders_only)
        assert refused.status_code == 403
        assert refused.json()["error"] == {"code": "out_of_scope",
                                           "message": "this API key may not read collection 'customer'"}
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
    # one request per clock second for the region; 12 requests take well under 6 seconds
    assert sum(a.status_code == 200 for a in answers) <= 6
    assert set(unlimited) == {200}
    # and a request under the limit passes: one sent once Retry-After has elapsed
    time.sleep(int(refused[-1].headers["Retry-After"]))
    assert stack.get(JANE, key=limited).status_code == 200


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


class FromAddress(requests.adapters.HTTPAdapter):
    """Connects from a loopback address of its own (Linux answers on all of 127.0.0.0/8), so the
    region sees distinct clients: its proxy tells the API the address it saw, whatever headers say."""

    def __init__(self, address: str):
        self.address = address
        super().__init__()

    def init_poolmanager(self, *args, **kwargs):
        kwargs["source_address"] = (self.address, 0)
        super().init_poolmanager(*args, **kwargs)


def client(address: str) -> requests.Session:
    session = requests.Session()
    session.mount("http://", FromAddress(address))
    return session


def get_from(stack, address: str, key: str | None = None, headers: dict | None = None) -> requests.Response:
    return client(address).get(stack.api.base + JANE, timeout=10,
                               headers={"Authorization": f"Bearer {key or stack.key}", **(headers or {})})


def guess(stack, n: int, *, address: str, forwarded_for: str | None = None) -> list[requests.Response]:
    headers = {"X-Forwarded-For": forwarded_for} if forwarded_for else {}
    return [get_from(stack, address, key=f"lk_{i:08x}_not-a-real-secret", headers=headers) for i in range(n)]


def test_an_address_that_keeps_sending_invalid_keys_gets_429_and_other_clients_do_not(tmp_path):
    stack = Stack(tmp_path).start(api={"invalid_keys_per_minute": 10})
    try:
        attacker = guess(stack, 40, address="127.0.0.9")
        neighbour = get_from(stack, "127.0.0.5")
        neighbours_typo = guess(stack, 1, address="127.0.0.5")[0]
        attackers_real_key = get_from(stack, "127.0.0.9")
    finally:
        stack.stop()

    statuses = [a.status_code for a in attacker]
    # the first 10 are checked; a minute's window may start during the 40, and 10 more are checked in it
    assert statuses[:10] == [401] * 10, statuses
    assert statuses.count(401) <= 20 and statuses.count(429) >= 20, statuses
    refused = next(a for a in attacker if a.status_code == 429)
    assert refused.json()["error"]["code"] == "too_many_invalid_keys"
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert neighbour.status_code == 200
    assert neighbours_typo.status_code == 401
    assert neighbours_typo.json()["error"]["code"] == "invalid_api_key"
    assert attackers_real_key.status_code in (200, 429)  # a secret its worker already knew, or not checked


def test_an_x_forwarded_for_the_client_sends_is_ignored(tmp_path):
    """A client rotating forged X-Forwarded-For values is still one address to the API."""
    stack = Stack(tmp_path).start(api={"invalid_keys_per_minute": 10})
    try:
        rotating = [guess(stack, 1, address="127.0.0.7", forwarded_for=f"198.51.100.{i}")[0].status_code
                    for i in range(40)]
    finally:
        stack.stop()

    assert rotating.count(429) >= 20, rotating


def test_a_rate_limit_holds_for_the_whole_region_not_for_each_worker(tmp_path):
    stack = Stack(tmp_path, workers=4).start()
    try:
        limited = stack.create_key("limited-region", rate_limit=3)
        stack.wait_for_key(limited)
        time.sleep(1.1)  # a second of its own for what follows

        def timed_get(_):
            started = time.time()
            status = stack.get(JANE, key=limited).status_code
            return started, time.time(), status

        with ThreadPoolExecutor(max_workers=8) as pool:
            answers = list(pool.map(timed_get, range(40)))
    finally:
        stack.stop()

    seconds = int(max(end for _, end, _ in answers)) - int(min(start for start, _, _ in answers)) + 1
    admitted = sum(status == 200 for *_, status in answers)
    assert {status for *_, status in answers} <= {200, 429}
    assert 1 <= admitted <= 3 * seconds, (admitted, seconds)


def test_client_addresses_come_from_x_forwarded_for_only_through_trusted_proxies():
    from falcon import testing

    from serving.auth import TrustedProxies

    proxies = TrustedProxies(["127.0.0.1", "10.0.0.0/8"])

    def address(peer: str, forwarded: str | None = None) -> str:
        headers = {"X-Forwarded-For": forwarded} if forwarded else {}
        return proxies.client_address(testing.create_req(remote_addr=peer, headers=headers))

    assert address("198.51.100.7") == "198.51.100.7"
    assert address("198.51.100.7", "203.0.113.1") == "198.51.100.7"  # not a proxy: its header is ignored
    assert address("127.0.0.1", "203.0.113.1") == "203.0.113.1"
    assert address("127.0.0.1", "6.6.6.6, 203.0.113.1, 10.1.2.3") == "203.0.113.1"  # nearest untrusted hop
    assert address("127.0.0.1", "garbage, 203.0.113.1") == "203.0.113.1"
    assert address("127.0.0.1", "203.0.113.1, garbage") == "127.0.0.1"
    assert address("127.0.0.1") == "127.0.0.1"
