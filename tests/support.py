"""Helpers the tests share: real memcached processes, temporary projects, free ports."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from bench.processes import (  # noqa: F401  (the tests import them from here)
    MemcachedProcess,
    SlowClients,
    TcpProxy,
    mariadb_available,
    mariadb_base_url,
    postgres_available,
    postgres_base_url,
)
from orchestration.config.load import Project, load_project
from orchestration.machine import free_port, wait_for_port  # noqa: F401

# Jane Doe's recommendations in the Braze page excerpted in tests/fixtures/braze-connected-content.txt.
JANE_RECOMMENDATIONS = {
    "concerts": [
        {"artist": "Aphex Twin", "location": "San Francisco, CA", "event_date": "2023-01-31"},
        {"artist": "Sultan + Shepard", "location": "San Francisco, CA", "event_date": "2023-02-25"},
    ],
    "upcoming_album_release": {
        "title": "Universal Language",
        "artist": "Simon Doty",
        "label": "Anjunadeep",
        "release_date": "2023-04-28",
    },
}


class ProjectFactory:
    """Builds a project in a temporary folder: larder.yaml, sync files, optional regions."""

    def __init__(self, root: Path, *, warehouse_url: str, state_url: str):
        self.root = root
        self.warehouse_url = warehouse_url
        self.state_url = state_url

    def __call__(
        self,
        syncs: list[dict[str, Any]],
        *,
        regions: dict[str, list[str]] | None = None,
        collections: dict[str, dict[str, Any]] | None = None,
        extra: dict[str, Any] | None = None,
        warehouse_url: str | None = None,
        state_url: str | None = None,
    ) -> Project:
        config = {
            "warehouse": {"url": warehouse_url or self.warehouse_url},
            "state": {"url": state_url or self.state_url},
            "regions": {name: {"servers": servers} for name, servers in (regions or {}).items()}
            or {"test": {"servers": ["127.0.0.1:1"]}},
            "collections": collections or {},
            "syncs": ["syncs/*.yaml"],
            **(extra or {}),
        }
        (self.root / "syncs").mkdir(exist_ok=True)
        for old in (self.root / "syncs").glob("*.yaml"):
            old.unlink()
        for sync in syncs:
            (self.root / "syncs" / f"{sync['name']}.yaml").write_text(yaml.safe_dump(sync, sort_keys=False))
        path = self.root / "larder.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return load_project(path)
