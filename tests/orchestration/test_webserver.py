"""End to end: a real dagster-webserver serving the demo's code location, queried over GraphQL."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import requests

from tests.orchestration.conftest import running_webserver

pytestmark = pytest.mark.slow

CODE_LOCATION = """
query CodeLocation {
  locationStatusesOrError {
    ... on WorkspaceLocationStatusEntries { entries { name loadStatus } }
  }
  repositoriesOrError {
    ... on RepositoryConnection {
      nodes { name location { name } jobs { name } sensors { name } schedules { name } }
    }
  }
  assetNodes {
    assetKey { path }
    groupName
    assetChecksOrError { ... on AssetChecks { checks { name blocking } } }
  }
}
"""
LOAD_TIMEOUT_SECONDS = 90


@pytest.fixture
def webserver(demo, tmp_path):
    """dagster-webserver on a free port, loading workspace.yaml with the demo's temporary runtime."""
    log = tmp_path / "webserver.log"
    (tmp_path / "dagster").mkdir()
    with running_webserver(demo.env, tmp_path / "dagster", log) as base_url:
        yield f"{base_url}/graphql", log


def test_the_webserver_serves_every_asset_check_job_sensor_and_schedule_of_the_demo(demo, webserver):
    url, log = webserver
    data = _query_once_loaded(url, log)

    (repository,) = data["repositoriesOrError"]["nodes"]
    assert repository["location"]["name"] == "larder"
    assert {j["name"] for j in repository["jobs"]} >= {j.name for j in demo.defs.resolve_all_job_defs()} - {"__ASSET_JOB"}
    assert {s["name"] for s in repository["sensors"]} == {s.name for s in demo.defs.sensors}
    assert {s["name"] for s in repository["schedules"]} == {s.name for s in demo.defs.schedules}

    graph = demo.defs.resolve_asset_graph()
    served = {"/".join(node["assetKey"]["path"]): node for node in data["assetNodes"]}
    assert set(served) == {key.to_user_string() for key in graph.get_all_asset_keys()}
    assert served["sync/customer_engagement_sync"]["groupName"] == served["collection/customers"]["groupName"] == "customers"
    checks = {
        f"{key}:{check['name']}"
        for key, node in served.items()
        for check in node["assetChecksOrError"].get("checks", [])
    }
    assert checks == {f"{k.asset_key.to_user_string()}:{k.name}" for k in graph.asset_check_keys}
    assert "model/customer_profiles_model:customer_profiles_email_unique" in checks


def _query_once_loaded(url: str, log: Path) -> dict:
    """Poll until the code location has loaded, then return the whole answer."""
    deadline = time.monotonic() + LOAD_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        try:
            answer = requests.post(url, json={"query": CODE_LOCATION}, timeout=10).json()
        except requests.ConnectionError:
            time.sleep(0.5)
            continue
        assert "errors" not in answer, answer["errors"]
        entries = answer["data"]["locationStatusesOrError"]["entries"]
        if entries and all(entry["loadStatus"] == "LOADED" for entry in entries):
            assert answer["data"]["repositoriesOrError"].get("nodes"), f"code location failed to load: {answer}"
            return answer["data"]
        time.sleep(0.5)
    pytest.fail(f"dagster-webserver did not load the code location in {LOAD_TIMEOUT_SECONDS}s:\n{log.read_text()[-3000:]}")
