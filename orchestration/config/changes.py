"""Notice when a project's configuration changes on disk, and load the new one.

A project is read from larder.yaml, the sync files its globs match and the dbt manifest. A
`ProjectWatcher` stats those files (a few `stat` calls and globs: cheap enough to do every second)
and loads the project again when any of them was added, removed or rewritten. A project that does
not load (a YAML or validation error, a manifest half written by `dbt parse`) is reported, and the
last good one stays in use; the next change is tried again.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from orchestration.config.load import ConfigError, Project, load_project

POLL_SECONDS = 1.0
DEFAULT_SYNC_GLOBS = ("syncs/*.yaml",)

log = logging.getLogger("larder.config")

Fingerprint = tuple[tuple[str, int, int, int], ...]


def project_files(path: Path, project: Project | None) -> list[Path]:
    """The files a project is read from: larder.yaml, its sync files and the dbt manifest."""
    base = path.parent
    globs = project.spec.syncs if project is not None else DEFAULT_SYNC_GLOBS
    files = [path]
    for pattern in globs:
        files.extend(sorted(base.glob(pattern)))
    if project is not None and project.spec.dbt is not None:
        files.append(project.spec.dbt.manifest_path)
    return files


def fingerprint(files: list[Path]) -> Fingerprint:
    """(path, inode, mtime in ns, size) of each file; a missing file is (path, -1, -1, -1)."""
    marks = []
    for file in files:
        try:
            stat = file.stat()
        except OSError:
            marks.append((str(file), -1, -1, -1))
        else:
            marks.append((str(file), stat.st_ino, stat.st_mtime_ns, stat.st_size))
    return tuple(marks)


@dataclass(frozen=True)
class LoadFailure:
    """Why the configuration on disk is not the one in use."""

    message: str
    fingerprint: Fingerprint


class ProjectWatcher:
    """Loads the project again whenever its files change; calls `on_change` with each new one.

    `check()` does one poll (tests and the `larder watch` loop call it); `start()` polls every
    `interval` seconds in a daemon thread. `failure` says why the files on disk are not in use.
    """

    def __init__(
        self,
        project: Project,
        on_change: Callable[[Project], None],
        *,
        seen: Fingerprint | None = None,
        interval: float = POLL_SECONDS,
        name: str = "larder-config-watcher",
    ):
        self.failure: LoadFailure | None = None
        self._path = project.path
        self._on_change = on_change
        self._interval = interval
        self._name = name
        # The project in use and the files it was loaded from, replaced as one: a process forked
        # meanwhile (a gunicorn worker) never pairs a project with another's fingerprint.
        self.current: tuple[Project, Fingerprint] = (project, seen or fingerprint(project_files(self._path, project)))
        self._tried: Fingerprint | None = None
        self._stopped = threading.Event()

    @property
    def project(self) -> Project:
        return self.current[0]

    def check(self) -> bool:
        """Load and hand over the project if its files changed since the last check; True if it did."""
        project, seen = self.current
        current = fingerprint(project_files(self._path, project))
        if current == seen or current == self._tried:
            return False
        try:
            project = load_project(self._path)
            self._on_change(project)
        except ConfigError as error:
            self._tried = current  # the same files would fail the same way: wait for the next change
            self._fail(str(error), current)
            return False
        except Exception as error:  # e.g. a manifest caught half written: try again on the next poll
            self._fail(f"{error.__class__.__name__}: {error}", current)
            return False
        self.current = (project, current)
        self._tried = None
        if self.failure is not None:
            log.warning("configuration %s loads again", self._path)
        self.failure = None
        return True

    def _fail(self, message: str, current: Fingerprint) -> None:
        if self.failure is None or self.failure.message != message:
            log.error("configuration %s changed but does not load; the last good one stays in use:\n%s",
                      self._path, message)
        self.failure = LoadFailure(message, current)

    def start(self) -> ProjectWatcher:
        thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        thread.start()
        return self

    def stop(self) -> None:
        self._stopped.set()

    def _run(self) -> None:
        while not self._stopped.wait(self._interval):
            try:
                self.check()
            except Exception:  # never let the watcher die: the next poll tries again
                log.exception("checking configuration %s for changes failed", self._path)
