"""Record lookups through gunicorn and memcached: encodings, headers, ETags, batches, no false 404s."""

from __future__ import annotations

import socket
from urllib.parse import quote

import orjson
import pytest

from orchestration.store.cache import RecordCache
from orchestration.store.keys import record_key
from tests.serving.conftest import CUSTOMERS, write_customers

LOOKUP = "/v1/collections/customer/records/{index}/{value}"


def lookup(index: str, value) -> str:
    return LOOKUP.format(index=index, value=quote(str(value), safe=""))


def every_lookup(customers=CUSTOMERS):
    """(index, value) of every customer under every index."""
    return [(index, value) for id_, email, *_ in customers for index, value in (("id", id_), ("email", email))]


@pytest.mark.parametrize(("index", "value"), every_lookup())
def test_every_customer_answers_on_every_index_with_the_synced_record(stack, index, value):
    response = stack.get(lookup(index, value))

    assert response.status_code == 200, response.text
    record = response.json()
    expected = next(c for c in CUSTOMERS if value in c[:2])
    assert (record["id"], record["email"], record["full_name"]) == expected[:3]
    assert record["recommendations"] == expected[3]
    assert record["first_name"] == expected[2].split(" ")[0]


def test_a_value_with_an_encoded_slash_is_one_value_not_two_path_segments(stack):
    response = stack.get("/v1/collections/customer/records/email/a%2Fb%40example.com")

    assert response.status_code == 200
    assert response.json()["id"] == 3


def test_the_body_is_the_cached_bytes_and_headers_describe_the_record(stack):
    packed = RecordCache([stack.us.server]).get(record_key("customer", "id", "12345"))

    response = stack.get(lookup("id", 12345))

    assert response.content == packed[28:]  # after the envelope's header: sent as synced
    assert response.headers["Content-Type"] == "application/json"
    assert response.headers["Cache-Control"] == "max-age=600"
    assert response.headers["X-Larder-Region"] == "us"
    assert response.headers["ETag"] == f'"{packed[2:18].decode()}"'
    assert response.headers["X-Larder-Synced-At"] == str(int(packed[18:28]))


def test_a_collection_without_max_age_gets_the_default_cache_control(stack):
    response = stack.get("/v1/collections/orders/records/order_id/1")

    assert response.status_code == 200
    assert response.json() == {"order_id": 1, "status": "open"}
    assert response.headers["Cache-Control"] == "max-age=300"


def test_if_none_match_with_the_current_etag_answers_304_without_a_body(stack):
    etag = stack.get(lookup("id", 12345)).headers["ETag"]

    unchanged = stack.get(lookup("id", 12345), headers={"If-None-Match": etag})
    stale = stack.get(lookup("id", 12345), headers={"If-None-Match": '"0000000000000000"'})

    assert unchanged.status_code == 304
    assert unchanged.content == b""
    assert unchanged.headers["ETag"] == etag
    assert stale.status_code == 200


def test_head_answers_the_headers_of_get_without_the_body(stack):
    get = stack.get(lookup("email", "jane@example.com"))
    head = stack.request("HEAD", lookup("email", "jane@example.com"))

    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["ETag"] == get.headers["ETag"]
    assert head.headers["Content-Length"] == str(len(get.content))


@pytest.mark.parametrize(
    ("path", "code"),
    [
        ("/v1/collections/nope/records/id/1", "unknown_collection"),
        ("/v1/collections/customer/records/sku/1", "unknown_index"),
        ("/v1/collections/customer/records/id/999999", "record_not_found"),
        ("/v1/collections/customer/records/email/nobody%40example.com", "record_not_found"),
    ],
)
def test_lookups_of_what_does_not_exist_answer_404_with_a_code(stack, path, code):
    response = stack.get(path)

    assert response.status_code == 404
    assert response.json()["error"]["code"] == code


def test_a_batch_returns_found_records_by_value_and_lists_the_missing(stack):
    response = stack.get("/v1/collections/customer/records/id", params={"values": ["12345", "2", "404", "2"]})

    assert response.status_code == 200
    body = response.json()
    assert set(body["records"]) == {"12345", "2"}
    assert body["records"]["12345"]["full_name"] == "Jane Doe"
    assert body["missing"] == ["404"]
    assert response.headers["Cache-Control"] == "max-age=600"


def test_a_posted_batch_takes_strings_and_integers(stack):
    response = stack.request(
        "POST", "/v1/collections/customer/records/email", json={"values": ["zoë müller@example.com", "x@y.z"]}
    )

    assert response.status_code == 200
    assert response.json()["records"]["zoë müller@example.com"]["id"] == 2
    assert response.json()["missing"] == ["x@y.z"]
    by_id = stack.request("POST", "/v1/collections/customer/records/id", json={"values": [12345]})
    assert list(by_id.json()["records"]) == ["12345"]


@pytest.mark.parametrize(
    "values",
    [[], [str(i) for i in range(101)], [True], [""], "12345"],
    ids=["none", "over-100", "boolean", "empty", "not-a-list"],
)
def test_a_batch_with_no_usable_values_or_over_100_answers_400(stack, values):
    response = stack.request("POST", "/v1/collections/customer/records/id", json={"values": values})

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_values"


def test_a_record_deleted_by_a_sync_answers_404_on_every_index(fresh_stack):
    jane, *others = CUSTOMERS
    write_customers(fresh_stack.warehouse, others)

    report = fresh_stack.sync()

    assert report.counts["removed"] == 1
    for index, value in every_lookup([jane]):
        assert fresh_stack.get(lookup(index, value)).json()["error"]["code"] == "record_not_found"
    batch = fresh_stack.get("/v1/collections/customer/records/id", params={"values": ["12345", "2"]}).json()
    assert batch["missing"] == ["12345"]
    for index, value in every_lookup(others):
        assert fresh_stack.get(lookup(index, value)).status_code == 200


def test_after_memcached_restarts_every_record_answers_200_and_is_put_back(fresh_stack):
    fresh_stack.us.restart()

    for index, value in every_lookup():
        response = fresh_stack.get(lookup(index, value))
        assert response.status_code == 200, (index, value, response.text)
    assert fresh_stack.get("/v1/collections/orders/records/order_id/1").status_code == 200

    # A worker whose connection died with the old memcached answers from state once, then reconnects.
    for index, value in every_lookup():
        sources = [fresh_stack.get(lookup(index, value)).headers["X-Larder-Source"] for _ in range(3)]
        assert sources[-1] == "cache", (index, value, sources)


def test_a_deleted_record_stays_404_after_memcached_restarts(fresh_stack):
    write_customers(fresh_stack.warehouse, CUSTOMERS[1:])
    fresh_stack.sync()

    fresh_stack.us.restart()

    for index, value in (("id", 12345), ("email", "jane@example.com")):
        gone = fresh_stack.get(lookup(index, value))
        assert gone.status_code == 404
        assert gone.json()["error"]["code"] == "record_not_found"
    assert fresh_stack.get(lookup("id", 2)).status_code == 200


def test_with_memcached_down_records_are_served_from_state_and_marked(fresh_stack):
    fresh_stack.us.stop()

    found = fresh_stack.get(lookup("email", "jane@example.com"))
    batch = fresh_stack.get("/v1/collections/customer/records/id", params={"values": ["12345", "404"]})
    missing = fresh_stack.get(lookup("id", 404))

    assert found.status_code == 200
    assert found.headers["X-Larder-Source"] == "state-cache-down"
    assert found.json()["full_name"] == "Jane Doe"
    assert batch.headers["X-Larder-Source"] == "state-cache-down"
    assert list(batch.json()["records"]) == ["12345"]
    assert missing.status_code == 404  # the state knows it does not exist: a true 404
    assert missing.json()["error"]["code"] == "record_not_found"


def test_a_record_evicted_from_the_cache_is_read_from_state_and_put_back(stack):
    cache = RecordCache([stack.us.server])
    key = record_key("customer", "id", "4")
    cache.delete_many([key])

    first = stack.get(lookup("id", 4))

    assert first.status_code == 200
    assert first.headers["X-Larder-Source"] == "state"
    assert cache.get(key) is not None
    assert orjson.loads(cache.get(key)[28:]) == first.json()
    assert stack.get(lookup("id", 4)).headers["X-Larder-Source"] == "cache"


def raw_get(stack, target: bytes) -> tuple[int, bytes]:
    """GET with the request target's bytes sent as they are (no client would percent-encode them)."""
    request = (b"GET " + target + b" HTTP/1.1\r\nHost: test\r\nConnection: close\r\n"
               b"Authorization: Bearer " + stack.key.encode() + b"\r\n\r\n")
    with socket.create_connection(("127.0.0.1", stack.api.port), timeout=10) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


@pytest.mark.parametrize(
    "target",
    [
        "/v1/collections/customer/records/email/zoë%20müller%40example.com",
        "/v1/collections/customer/records/email/zoë müller@example.com?cache_buster=1".replace(" ", "%20"),
        "http://test/v1/collections/customer/records/email/zoë%20müller@example.com",
    ],
    ids=["raw-utf8", "raw-utf8-and-query", "absolute-form"],
)
def test_a_path_sent_with_raw_utf8_finds_the_same_record_as_percent_encoded(stack, target):
    encoded = stack.get(lookup("email", "zoë müller@example.com"))

    status, body = raw_get(stack, target.encode("utf-8"))

    assert encoded.status_code == 200
    assert status == 200, body
    assert orjson.loads(body) == encoded.json()


def test_a_percent_encoded_value_that_looks_like_mojibake_is_not_reinterpreted(stack):
    # 'zoÃ«' percent-encoded: a different value from 'zoë', so no record
    response = stack.get(lookup("email", "zoë müller@example.com".encode().decode("latin-1")))

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "record_not_found"


def test_a_posted_batch_with_a_property_its_schema_does_not_have_answers_400_unknown_property(stack):
    response = stack.request("POST", "/v1/collections/customer/records/id", json={"values": ["12345"], "limit": 5})

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "unknown_property"
    assert "'limit'" in response.json()["error"]["message"]
