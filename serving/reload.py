"""The API picks up configuration changes by itself: no restart, no signal.

Each gunicorn worker serves through a `ReloadingApp`. A background thread watches larder.yaml,
the sync files and the dbt manifest (`orchestration.config.changes`); when they change it loads
the project, builds a whole new Falcon app from it off the request path and swaps it in, so the
next request sees the new collections, indices and syncs. Requests already running finish on the
app they started with. A configuration that does not load is logged and reported by `/readyz`;
the last good one keeps serving.

The state store, the region's cache client and the API keys are carried over to each new app
unless the settings they are built from changed.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from orchestration.config.changes import POLL_SECONDS, Fingerprint, ProjectWatcher
from orchestration.config.load import ConfigError, Project, load_project
from orchestration.store.cache import RecordCache
from orchestration.store.state import StateStore
from serving.auth import KeyRing
from serving.contract import ConfigDetail
from serving.errors import describe_error
from serving.state_reads import STORE_ERRORS, StateReads, api_state_reads, api_state_store

log = logging.getLogger("larder.api")


class ConfigStatus:
    """What `/readyz` says about the configuration: when it was loaded, and why a newer one is not in use."""

    def __init__(self, project: Project):
        self._project = project
        self._loaded_at = time.time()
        self._watcher: ProjectWatcher | None = None

    def loaded(self, project: Project) -> None:
        self._project = project
        self._loaded_at = time.time()

    def watch(self, watcher: ProjectWatcher) -> None:
        self._watcher = watcher

    def detail(self) -> ConfigDetail:
        failure = self._watcher.failure if self._watcher is not None else None
        detail: ConfigDetail = {
            "loaded_at": round(self._loaded_at, 3),
            "syncs": len(self._project.syncs),
            "status": "current" if failure is None else "stale",
        }
        if failure is not None:
            detail["error"] = failure.message
        return detail


@dataclass
class Collaborators:
    """What a new app can share with the one it replaces, and the settings each was built from."""

    state: StateStore
    cache: RecordCache
    keyring: KeyRing
    reads: StateReads
    state_url: str
    servers: tuple[str, ...]
    key_refresh_seconds: float

    @classmethod
    def build(cls, project: Project, region: str) -> Collaborators:
        state = api_state_store(project.spec.state.url)
        return cls(
            state=state,
            cache=RecordCache(project.regions[region].servers),
            keyring=_started_keyring(state, project),
            reads=api_state_reads(state),
            state_url=project.spec.state.url,
            servers=tuple(project.regions[region].servers),
            key_refresh_seconds=project.spec.api.key_refresh_seconds,
        )

    def for_project(self, project: Project, region: str) -> tuple[Collaborators, list[Any]]:
        """The collaborators `project` needs (these where its settings did not change) and those it retires."""
        state, cache, keyring, reads = self.state, self.cache, self.keyring, self.reads
        retired: list[Any] = []
        if project.spec.state.url != self.state_url:
            state = api_state_store(project.spec.state.url)
            reads = api_state_reads(state)
            retired += [self.state, self.reads]
        if tuple(project.regions[region].servers) != self.servers:
            cache = RecordCache(project.regions[region].servers)
            retired.append(self.cache)
        if state is not self.state or project.spec.api.key_refresh_seconds != self.key_refresh_seconds:
            keyring = _started_keyring(state, project)
            retired.append(self.keyring)
        return Collaborators(
            state=state, cache=cache, keyring=keyring, reads=reads, state_url=project.spec.state.url,
            servers=tuple(project.regions[region].servers),
            key_refresh_seconds=project.spec.api.key_refresh_seconds,
        ), retired


class ReloadingApp:
    """A WSGI app that forwards to the app built from the latest good configuration."""

    def __init__(self, project: Project, region: str, build: Callable[..., Any], *, seen: Fingerprint | None = None,
                 interval: float = POLL_SECONDS):
        self._region = region
        self._build = build
        self.status = ConfigStatus(project)
        self._collaborators = Collaborators.build(project, region)
        self._retired: list[Any] = []
        self._app = self._build_app(project, self._collaborators)
        self._lock = threading.Lock()
        self.watcher = ProjectWatcher(project, self._swap, seen=seen, interval=interval, name=f"larder-reload-{region}")
        self.status.watch(self.watcher)

    def __call__(self, environ, start_response) -> Iterable[bytes]:
        return self._app(environ, start_response)

    def start(self) -> ReloadingApp:
        self.watcher.start()
        return self

    def _build_app(self, project: Project, collaborators: Collaborators):
        return self._build(
            project, self._region, state=collaborators.state, cache=collaborators.cache,
            keyring=collaborators.keyring, reads=collaborators.reads, config_status=self.status,
        )

    def _swap(self, project: Project) -> None:
        """Build the app for `project` and serve it from the next request on (raises ConfigError if it cannot)."""
        region = project.regions.get(self._region)
        if region is None or not region.enabled:
            raise ConfigError(f"{project.path}: regions: this API serves region {self._region!r}, "
                              "which is no longer configured or enabled")
        with self._lock:
            collaborators, retired = self._collaborators.for_project(project, self._region)
            app = self._build_app(project, collaborators)
            self._close(self._retired)  # retired by the previous swap: no request can still use them
            self._retired = retired
            self._collaborators = collaborators
            self._app = app
            self.status.loaded(project)
        log.info("configuration %s reloaded: %d syncs, %d collections", project.path, len(project.syncs),
                 len(project.collection_names))

    @staticmethod
    def _close(things: list[Any]) -> None:
        for thing in things:
            try:
                if isinstance(thing, StateStore):
                    thing.dispose()
                elif isinstance(thing, KeyRing):
                    thing.stop()
                else:
                    thing.close()
            except STORE_ERRORS as error:  # the connection is going anyway
                log.warning("closing a replaced connection failed: %s", describe_error(error))
            except Exception:  # a bug: logged, but it must not keep the new configuration from being served
                log.exception("closing a replaced %s failed unexpectedly", type(thing).__name__)


def _started_keyring(state: StateStore, project: Project) -> KeyRing:
    keyring = KeyRing(state, refresh_seconds=project.spec.api.key_refresh_seconds)
    keyring.start()
    return keyring


# In the gunicorn master: the latest configuration that loaded, kept current by a watcher of its own.
_master: ProjectWatcher | None = None


def watch_in_master() -> None:
    """gunicorn's `on_starting` hook: load the project in the master (an invalid one stops `larder serve`
    at once) and keep the latest good one there, so a worker that boots later (a crashed one replaced)
    starts from it even while the files on disk do not load."""
    global _master
    _log_info_to_stderr()
    _master = ProjectWatcher(load_project(), lambda project: None, name="larder-reload-master").start()


def reloading_app(region: str | None, build: Callable[..., Any]) -> ReloadingApp:
    """The app a gunicorn worker serves: built from the master's latest good project (else the one on
    disk), rebuilt by itself when the configuration changes. `region` None: the first enabled one."""
    _log_info_to_stderr()
    project, seen = _master.current if _master is not None else (load_project(), None)
    return ReloadingApp(project, region or project.enabled_regions[0], build, seen=seen).start()


def _log_info_to_stderr() -> None:
    """Reloads are logged at INFO; without a handler of its own only warnings would reach gunicorn's log."""
    logger = logging.getLogger("larder")
    if logger.handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("[%(asctime)s] [%(process)d] [%(levelname)s] %(name)s: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
