"""Slow, idle and oversized clients against a served region: they cost other clients nothing.

`larder serve` puts a buffering proxy (nginx) in front of gunicorn's sync workers: a request
reaches a worker only once it has fully arrived, so a client that dribbles its headers or its
body holds a proxy connection, never a worker.
"""

from __future__ import annotations

import socket
import time

import orjson
import pytest

from tests.support import SlowClients

LOOKUP = "/v1/collections/customer/records/id/12345"


def raw_exchange(port: int, request: bytes, *, send_all: bool = True) -> tuple[int, dict[str, str], bytes]:
    """Send raw bytes, read the answer until the server closes: (status, headers, body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        try:
            sock.sendall(request)
        except OSError:  # the server may answer and close before taking everything
            pass
        answer = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            answer += chunk
            if b"\r\n\r\n" in answer and _complete(answer):
                break
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {name.strip().lower(): value.strip() for name, _, value in (h.partition(":") for h in header_lines)}
    return int(status_line.split()[1]), headers, body


def _complete(answer: bytes) -> bool:
    head, _, body = answer.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return len(body) >= int(line.split(b":")[1])
    return False


def error_code(body: bytes) -> str:
    return orjson.loads(body)["error"]["code"]


def test_sixteen_slow_clients_cost_other_clients_nothing(stack):
    # The stack serves with 2 workers: 8 dribbled headers and 8 unfinished bodies are 8 times as many.
    with SlowClients(stack.api.port, header=8, body=8, interval=0.5) as slow:
        time.sleep(1)  # every slow client has sent something more
        statuses = [stack.get(LOOKUP).status_code for _ in range(30)]  # each would time out after 10 s
        batch = stack.request("POST", "/v1/collections/customer/records/id", json={"values": [12345, 2]})
        assert slow.open_count() > 0, "the slow clients were all disconnected: nothing was measured"

    assert statuses == [200] * 30
    assert batch.status_code == 200 and sorted(batch.json()["records"]) == ["12345", "2"]


def test_a_client_that_never_finishes_its_headers_is_disconnected(stack):
    with SlowClients(stack.api.port, header=2, body=0, interval=0.5) as slow:
        deadline = time.monotonic() + 120  # generous: the proxy's header timeout is 10 s
        while slow.open_count() and time.monotonic() < deadline:
            time.sleep(0.5)
        assert slow.open_count() == 0


def test_a_body_over_the_limit_is_refused_with_413_json_before_it_is_sent(stack):
    request = (b"POST /v1/collections/customer/records/id HTTP/1.1\r\nHost: t\r\n"
               b"Authorization: Bearer " + stack.key.encode() + b"\r\n"
               b"Content-Type: application/json\r\nContent-Length: 100000000\r\n\r\n{\"values\": [")

    status, headers, body = raw_exchange(stack.api.port, request)

    assert status == 413
    assert headers["content-type"] == "application/json"
    assert error_code(body) == "payload_too_large"


def test_a_header_over_the_limit_answers_431_json(stack):
    response = stack.get(LOOKUP, headers={"X-Padding": "a" * 100_000})

    assert response.status_code == 431
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"]["code"] == "headers_too_large"


def test_a_request_line_over_the_limit_answers_414_json(stack):
    response = stack.get("/v1/collections/customer/records/id?" + "&".join(["values=12345"] * 10_000))

    assert response.status_code == 414
    assert response.json()["error"]["code"] == "uri_too_long"


def test_a_request_that_is_not_http_answers_400_json(stack):
    status, headers, body = raw_exchange(stack.api.port, b"GET / HTTP/1.1\r\nHost: t\r\nBad Header Line\r\n\r\n")

    assert status == 400
    assert headers["content-type"] == "application/json"
    assert error_code(body) == "bad_request"


def test_a_batch_get_of_100_values_still_fits_the_request_line(stack):
    values = [f"someone.with.a.long.address.{n:03d}@example.com" for n in range(100)]

    response = stack.get("/v1/collections/customer/records/email", params={"values": values})

    assert response.status_code == 200
    assert len(response.json()["missing"]) == 100


@pytest.mark.parametrize("path", ["/metrics", "/readyz", "/healthz"])
def test_operational_endpoints_answer_behind_the_proxy(stack, path):
    assert stack.get(path).status_code == 200
