"""The Dagster resources of a Larder run: the durable state, the warehouse and each region's cache.

Each is made from the project the definitions were built from (a run never reads the
configuration again, so what it does is what the UI shows), opened once when the run starts and
closed when it ends. A run opens only the resources its steps ask for: a dbt build opens none.

They are resources made by a function (`@dg.resource`), not ConfigurableResource: what they are
made of is the loaded project, which is no run configuration, and a URL may hold a password that
the UI would show as the resource's configuration.
"""

# No `from __future__ import annotations`: Dagster reads the resource annotations.

from collections.abc import Iterator, Mapping

import dagster as dg

from orchestration.config.load import Project
from orchestration.config.specs import RegionSpec
from orchestration.store.cache import RecordCache
from orchestration.store.state import StateStore
from orchestration.sync import Services
from orchestration.sync.warehouse import Warehouse


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
    return {"state": _state(project), "warehouse": _warehouse(project), "caches": _caches(project)}


def _state(project: Project) -> dg.ResourceDefinition:
    @dg.resource(description="The durable state store: runs, snapshots, records and API keys.")
    def state(_context: dg.InitResourceContext) -> Iterator[StateStore]:
        store = StateStore(project.spec.state.url)
        try:
            yield store
        finally:
            store.dispose()

    return state


def _warehouse(project: Project) -> dg.ResourceDefinition:
    @dg.resource(description="The warehouse the models are read from.")
    def warehouse(_context: dg.InitResourceContext) -> Iterator[Warehouse]:
        connection = Warehouse(project.spec.warehouse.url)
        try:
            yield connection
        finally:
            connection.dispose()

    return warehouse


def _caches(project: Project) -> dg.ResourceDefinition:
    @dg.resource(description="Each region's Memcached pool.")
    def caches(_context: dg.InitResourceContext) -> Iterator[RegionCaches]:
        pools = RegionCaches(project.regions)
        try:
            yield pools
        finally:
            pools.close()

    return caches
