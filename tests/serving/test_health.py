"""Liveness and readiness of a region under gunicorn."""

from __future__ import annotations

import requests


def test_healthz_answers_without_a_key(stack):
    response = requests.get(stack.api.base + "/healthz", timeout=5)

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_readyz_is_503_with_the_reason_while_the_regions_memcached_is_down(fresh_stack):
    readyz = fresh_stack.api.base + "/readyz"
    ready = requests.get(readyz, timeout=5).json()
    assert (ready["status"], ready["region"]) == ("ready", "us")

    fresh_stack.us.stop()
    down = requests.get(readyz, timeout=5)
    fresh_stack.us.start()
    up = [requests.get(readyz, timeout=5).status_code for _ in range(4)]

    assert down.status_code == 503
    assert down.json()["error"]["code"] == "not_ready"
    assert "us" in down.json()["error"]["message"]
    assert up[-1] == 200
