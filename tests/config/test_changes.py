"""Watching a project's files: a change is loaded once, a broken one is reported and the last good one kept."""

from __future__ import annotations

import json
import os

import yaml

from orchestration.config.changes import ProjectWatcher, project_files
from orchestration.config.load import DEMO_CONFIG, REPO_ROOT, home_for, larder_home

PEOPLE = {
    "name": "people",
    "model": {"sql": "select 1 as id"},
    "collection": "people",
    "primary_index": "id",
    "fields": [{"column": "id"}],
}


def touch_later(path) -> None:
    """Move the file's mtime forward, as an edit a little later would."""
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))


def watcher_of(project):
    changes = []
    return ProjectWatcher(project, changes.append), changes


def test_nothing_is_loaded_while_nothing_changes(project_factory):
    watcher, changes = watcher_of(project_factory([PEOPLE]))

    assert watcher.check() is False
    assert changes == []


def test_a_new_sync_file_is_loaded_once(project_factory, tmp_path):
    watcher, changes = watcher_of(project_factory([PEOPLE]))

    (tmp_path / "syncs" / "pets.yaml").write_text(yaml.safe_dump({**PEOPLE, "name": "pets", "collection": "pets"}))

    assert watcher.check() is True
    assert watcher.check() is False
    assert [p.sync_names for p in changes] == [("people", "pets")]
    assert watcher.project.sync_names == ("people", "pets")


def test_a_broken_file_keeps_the_last_good_project_and_says_why_until_it_is_fixed(project_factory, tmp_path):
    watcher, changes = watcher_of(project_factory([PEOPLE]))
    sync_file = tmp_path / "syncs" / "people.yaml"
    good = sync_file.read_text()

    sync_file.write_text(good.replace("primary_index: id", "primary_index: [id"))
    assert watcher.check() is False
    assert "people.yaml" in watcher.failure.message
    assert watcher.check() is False  # the same broken files are not loaded again
    assert watcher.project.sync_names == ("people",) and changes == []

    sync_file.write_text(good.replace("people", "persons"))
    assert watcher.check() is True
    assert watcher.failure is None
    assert watcher.project.sync_names == ("persons",)


def test_a_rewritten_dbt_manifest_is_a_change(project_factory, tmp_path):
    dbt = tmp_path / "dbt"
    (dbt / "target").mkdir(parents=True)
    manifest = dbt / "target" / "manifest.json"
    manifest.write_text(json.dumps({"nodes": {}, "sources": {}}))
    project = project_factory([PEOPLE], extra={"dbt": {"project_dir": str(dbt)}})
    watcher, changes = watcher_of(project)
    assert manifest in project_files(project.path, project)

    touch_later(manifest)

    assert watcher.check() is True


def test_the_runtime_folder_is_beside_larder_yaml_unless_it_is_the_demo_or_larder_home_is_set(monkeypatch, tmp_path):
    monkeypatch.delenv("LARDER_HOME", raising=False)
    assert home_for(tmp_path / "larder.yaml") == tmp_path / ".larder"
    assert home_for(DEMO_CONFIG) == REPO_ROOT / ".larder"
    monkeypatch.setenv("LARDER_CONFIG", str(tmp_path / "larder.yaml"))
    assert larder_home() == tmp_path / ".larder"

    monkeypatch.setenv("LARDER_HOME", str(tmp_path / "elsewhere"))
    assert home_for(tmp_path / "larder.yaml") == tmp_path / "elsewhere"
