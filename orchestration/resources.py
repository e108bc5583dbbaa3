"""The Dagster resources of a Larder run: the durable state, the warehouse and each region's cache.

Each is made from the project the definitions were built from (a run never reads the
configuration again, so what it does is what the UI shows), opened once when the run starts and
closed when it ends. A run opens only the resources its steps ask for: a dbt build opens none.

They are resources made by a function (`@dg.resource`), not ConfigurableResource: what they are
made of is the loaded project, which is no run configuration, and a URL may hold a password that
the UI would show as the resource's configuration.
"""

# No `from __future__ import annotations`: Dagster reads the resource annotations.

from collections.abc import Callable, Iterator, Mapping
from typing import TypeVar

import dagster as dg

from orchestration.config.load import Project
from orchestration.config.specs import RegionSpec
from orchestration.store.cache import RecordCache
from orchestration.store.state import StateStore
from orchestration.sync import Services
from orchestration.sync.warehouse import Warehouse

T = TypeVar("T")


class RegionCaches:
    """Each region's Memcached pool, connected the first time a run writes to it, closed together."""

    def __init__(self, regions: Mapping[str, RegionSpec]):
        self._regions = regions
        self._open: dict[str, RecordCache] = {}

    def region(self, name: str) -> RecordCache:
        if name not in self._open:
            self._open[name] = RecordCache(self._regions[name].servers)
        return self._open[name]

    def close(self) -> None:
        for cache in self._open.values():
            cache.close()
        self._open.clear()


class _RunServices(Services):
    """The engine's services over a run's resources, which own (and close) the connections."""

    def __init__(self, project: Project, state: StateStore, warehouse: Warehouse, caches: RegionCaches):
        super().__init__(project, state=state, warehouse=warehouse)
        self._region_caches = caches

    def cache(self, region: str) -> RecordCache:
        return self._region_caches.region(region)

    def close(self) -> None:
        """Nothing to close: the resources do when the run ends."""


def run_services(project: Project, state: StateStore, warehouse: Warehouse, caches: RegionCaches) -> Services:
    """What `run_sync` and `rehydrate_region` take, made of the run's resources."""
    return _RunServices(project, state, warehouse, caches)


def build_resources(project: Project) -> dict[str, dg.ResourceDefinition]:
    """The `state`, `warehouse` and `caches` resources of `project`, by the names assets ask for."""
    return {
        "state": _opened_per_run(
            "The durable state store: runs, snapshots, records and API keys.",
            lambda: StateStore(project.spec.state.url), StateStore.dispose,
        ),
        "warehouse": _opened_per_run(
            "The warehouse the models are read from.",
            lambda: Warehouse(project.spec.warehouse.url), Warehouse.dispose,
        ),
        "caches": _opened_per_run(
            "Each region's Memcached pool.", lambda: RegionCaches(project.regions), RegionCaches.close,
        ),
    }


def _opened_per_run(description: str, open_: Callable[[], T], close: Callable[[T], None]) -> dg.ResourceDefinition:
    """A resource opened when a run that uses it starts and closed when the run ends."""

    @dg.resource(description=description)
    def resource(_context: dg.InitResourceContext) -> Iterator[T]:
        opened = open_()
        try:
            yield opened
        finally:
            close(opened)

    return resource
