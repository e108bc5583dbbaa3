"""Every 4xx/5xx, Falcon's own included, is JSON {"error": {"code", "message"}} with a stable code."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status", "code"),
    [
        ("GET", "/nowhere", {}, 404, "not_found"),
        ("GET", "/v1/collections/customer/records", {}, 404, "not_found"),
        ("DELETE", "/v1/collections/customer/records/id/12345", {}, 405, "method_not_allowed"),
        ("PUT", "/v1/collections", {}, 405, "method_not_allowed"),
        ("POST", "/v1/collections/customer/records/id",
         {"data": b"{not json", "headers": {"Content-Type": "application/json"}}, 400, "bad_request"),
        ("POST", "/v1/collections/customer/records/id",
         {"data": b"values=1", "headers": {"Content-Type": "application/x-www-form-urlencoded"}}, 415,
         "unsupported_media_type"),
        ("GET", "/v1/collections/customer/records/id", {}, 400, "invalid_values"),
        ("GET", "/v1/syncs/orders/runs?limit=x", {}, 400, "invalid_parameter"),
    ],
)
def test_errors_are_json_with_a_stable_code_and_a_message(stack, method, path, kwargs, status, code):
    response = stack.request(method, path, **kwargs)

    assert response.status_code == status
    assert response.headers["Content-Type"] == "application/json"
    body = response.json()
    assert set(body) == {"error"}
    assert body["error"]["code"] == code
    assert body["error"]["message"]


def test_a_store_error_is_described_by_its_classes_never_its_sql_or_parameters(sqlite_url):
    import sqlalchemy as sa

    from serving.errors import describe_error

    engine = sa.create_engine(sqlite_url)
    with pytest.raises(sa.exc.OperationalError) as raised, engine.connect() as conn:
        conn.execute(sa.text("select pk from record_indices where cache_key = :key"),
                     {"key": "L1:users:email:=jane@example.com"})
    engine.dispose()

    assert "jane@example.com" in str(raised.value)  # what a log of the error itself would leak
    assert describe_error(raised.value) == "OperationalError from OperationalError"
