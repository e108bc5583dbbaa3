"""The whole path once, for real: dbt demo → Dagster assets → sync → memcached → gunicorn → HTTP."""

from __future__ import annotations

import os
import subprocess
import sys

import dagster as dg
import orjson
import pytest
import requests

from orchestration.config.load import REPO_ROOT, load_project
from orchestration.definitions import build_definitions
from orchestration.store.state import StateStore
from tests.support import JANE_RECOMMENDATIONS, MemcachedProcess, free_port, wait_for_port

JANE = {
    "user_id": 12345,
    "full_name": "Jane Doe",
    "lifetime_value": 1492.18,
    "churn_risk": 0.04,
    "90_day_summary": {
        "num_songs_listened": 813,
        "top_genres": ["house", "techno", "ambient"],
        "top_artists": ["deadmau5", "Marsh", "Enamour"],
    },
    "recommendations": JANE_RECOMMENDATIONS,
}


@pytest.fixture
def demo_stack(tmp_path, monkeypatch):
    """The demo project with its runtime folder, warehouse and memcached pools in tmp_path."""
    us, eu = MemcachedProcess(), MemcachedProcess()
    us.start()
    eu.start()
    env = {
        "LARDER_HOME": str(tmp_path),
        "LARDER_CONFIG": str(REPO_ROOT / "orchestration" / "larder.yaml"),
        "LARDER_MEMCACHED_US_PORT": str(us.port),
        "LARDER_MEMCACHED_EU_PORT": str(eu.port),
        "LARDER_WAREHOUSE_PATH": str(tmp_path / "warehouse.duckdb"),
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("LARDER_STATE_URL", raising=False)
    yield load_project(), env
    us.stop()
    eu.stop()


@pytest.fixture
def api_server(demo_stack, api_secret):
    """Started once the state holds a key: a worker loads the keys as it starts."""
    project, env = demo_stack
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "orchestration.cli", "serve", "--region", "us", "--bind", f"127.0.0.1:{port}",
         "--workers", "2"],
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, timeout=30)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=20)


@pytest.fixture
def api_secret(demo_stack) -> str:
    project, _ = demo_stack
    state = StateStore(project.spec.state.url)
    state.create_all()
    _, secret = state.create_key("skeleton-test")
    state.dispose()
    return secret


def test_demo_record_is_served_by_user_id_and_email_after_materializing_every_asset(demo_stack, api_server, api_secret):
    project, _ = demo_stack
    defs = build_definitions(project)
    result = defs.resolve_implicit_global_asset_job_def().execute_in_process(
        instance=dg.DagsterInstance.ephemeral()
    )
    assert result.success
    headers = {"Authorization": f"Bearer {api_secret}"}

    by_id = requests.get(f"{api_server}/v1/collections/customers/records/user_id/12345", headers=headers)
    by_email = requests.get(
        f"{api_server}/v1/collections/customers/records/email/jane.doe@example.com", headers=headers
    )

    assert by_id.status_code == 200 and by_email.status_code == 200, (by_id.text, by_email.text)
    assert by_id.headers["content-type"].startswith("application/json")
    assert by_id.content == by_email.content
    record = orjson.loads(by_id.content)
    assert _subset(record, JANE) == JANE
    assert record["email"] == "jane.doe@example.com"
    assert record["first_name"] == "Jane"  # the Liquid field
    assert record["engagement"]["tier"] == "high"  # merged from the dbt-meta sync


def test_bad_requests_get_json_errors_with_stable_codes(api_server, api_secret):
    good = {"Authorization": f"Bearer {api_secret}"}
    cases = [
        ("/v1/collections/customers/records/user_id/12345", {}, 401, "missing_api_key"),
        ("/v1/collections/customers/records/user_id/12345", {"Authorization": "Bearer lk_nope"}, 401, "invalid_api_key"),
        ("/v1/collections/customers/records/user_id/12345", {"Authorization": "Basic abc"}, 401, "invalid_api_key"),
        ("/v1/collections/nosuch/records/user_id/1", good, 404, "unknown_collection"),
        ("/v1/collections/customers/records/phone/1", good, 404, "unknown_index"),
        ("/v1/collections/customers/records/user_id/999999999", good, 404, "record_not_found"),
    ]
    for path, headers, status, code in cases:
        response = requests.get(api_server + path, headers=headers)
        assert response.status_code == status, (path, response.text)
        assert response.json()["error"]["code"] == code, path
        assert response.json()["error"]["message"]



def _subset(record: dict, shape: dict) -> dict:
    """The parts of `record` named by `shape`, recursively (the demo adds fields of its own)."""
    return {
        key: _subset(record[key], value) if isinstance(value, dict) else record.get(key)
        for key, value in shape.items()
    }
