"""Jobs: one per sync, one for all syncs, one rehydrate per region, `dbt_build`, and the first
build of everything that `larder up` runs.

`dbt_build` builds the dbt project and, in the same run, everything a sync on upstream change
needs downstream of it (its model with its checks, the sync, the collection): the new data is
served as soon as dbt is done, with no sensor tick and no second run on the way.
"""

# No `from __future__ import annotations`: Dagster reads the context and resource annotations.

import sys

import dagster as dg
from dagster._core.definitions.job_base import InMemoryJob
from dagster._core.definitions.repository_definition.valid_definitions import SINGLETON_REPOSITORY_NAME
from dagster._core.execution.api import execute_run
from dagster._core.remote_origin import (
    ManagedGrpcPythonEnvCodeLocationOrigin,
    RemoteJobOrigin,
    RemoteRepositoryOrigin,
)
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin

from orchestration.assets.keys import (
    COLLECTION_KEY_PREFIX,
    DBT_KEY_PREFIX,
    MODEL_KEY_PREFIX,
    SYNC_KEY_PREFIX,
    collection_key,
    model_key,
    sync_key,
)
from orchestration.config.load import REPO_ROOT, Project
from orchestration.config.specs import SyncSpec, UpstreamTrigger
from orchestration.resources import RegionCaches, run_services
from orchestration.store.state import StateStore
from orchestration.sync import rehydrate_region
from orchestration.sync.warehouse import Warehouse

DBT_JOB_NAME = "dbt_build"
BOOTSTRAP_JOB_NAME = "larder_up"
# The runs list shows a run's `user` tag as who launched it (else "Manually launched").
BOOTSTRAP_TAGS = {"user": "larder up", "larder/launched_by": "larder up"}
# workspace.yaml's code location, as the webserver names it.
CODE_LOCATION_MODULE = "orchestration.definitions"
CODE_LOCATION_NAME = "larder"


def sync_job_name(sync_name: str) -> str:
    return f"sync_{sync_name}"


def rehydrate_job_name(region: str) -> str:
    return f"rehydrate_{region}"


def build_sync_jobs(project: Project) -> list:
    jobs = [
        dg.define_asset_job(
            sync_job_name(d.spec.name),
            selection=dg.AssetSelection.assets(*_sync_chain(d.spec)),
            description=f"Run sync {d.spec.name}: read its model, write collection {d.spec.collection}.",
        )
        for d in project.syncs
    ]
    jobs.append(
        dg.define_asset_job(
            "all_syncs",
            selection=dg.AssetSelection.key_prefixes(MODEL_KEY_PREFIX, SYNC_KEY_PREFIX, COLLECTION_KEY_PREFIX),
            description="Run every sync.",
        )
    )
    return jobs


def build_dbt_jobs(project: Project) -> list:
    if project.spec.dbt is None:
        return []
    return [
        dg.define_asset_job(
            DBT_JOB_NAME,
            selection=dg.AssetSelection.key_prefixes(DBT_KEY_PREFIX)
            | dg.AssetSelection.assets(*follows_dbt(project)),
            description=(
                "dbt build (seeds, models, tests), then in the same run every sync on upstream change: "
                "its model, checks, sync and collection."
            ),
        )
    ]


def follows_dbt(project: Project) -> list[dg.AssetKey]:
    """The Larder assets a dbt build brings up to date: those of syncs on upstream change of a dbt model."""
    keys: dict[dg.AssetKey, None] = {}
    for declared in project.syncs:
        spec = declared.spec
        if spec.model.dbt is not None and isinstance(spec.trigger, UpstreamTrigger):
            keys.update(dict.fromkeys(_sync_chain(spec)))
    return list(keys)


def build_bootstrap_job():
    return dg.define_asset_job(
        BOOTSTRAP_JOB_NAME,
        selection=dg.AssetSelection.all(),
        description="The first build of everything (dbt, models, syncs, collections), run by `larder up`.",
        tags=BOOTSTRAP_TAGS,
    )


def run_bootstrap(defs: dg.Definitions, instance: dg.DagsterInstance, run_config: dict | None = None):
    """Run `larder_up` in this process, recorded as a run of the code location the UI serves;
    returns its result (`.success`, its events).

    A run executed in process belongs to no code location: the runs list could not name its job
    and the overview's timeline, which lists runs by code location, would say "No runs".
    """
    job = defs.resolve_job_def(BOOTSTRAP_JOB_NAME)
    run = instance.create_run_for_job(
        job_def=job, run_config=run_config, tags=job.tags, remote_job_origin=_served_origin(job.name)
    )
    return execute_run(InMemoryJob(job), run, instance)


def _served_origin(job_name: str) -> RemoteJobOrigin:
    location = ManagedGrpcPythonEnvCodeLocationOrigin(
        LoadableTargetOrigin(executable_path=sys.executable, module_name=CODE_LOCATION_MODULE, working_directory=str(REPO_ROOT)),
        location_name=CODE_LOCATION_NAME,
    )
    return RemoteJobOrigin(RemoteRepositoryOrigin(location, SINGLETON_REPOSITORY_NAME), job_name)


def _sync_chain(spec: SyncSpec) -> tuple[dg.AssetKey, ...]:
    return model_key(spec), sync_key(spec), collection_key(spec.collection)


def build_rehydrate_jobs(project: Project) -> list[dg.JobDefinition]:
    return [_rehydrate_job(project, region) for region in project.enabled_regions]


def _rehydrate_job(project: Project, region: str) -> dg.JobDefinition:
    @dg.op(name=f"rehydrate_{region}_cache")
    def rehydrate(
        context: dg.OpExecutionContext,
        state: dg.ResourceParam[StateStore],
        warehouse: dg.ResourceParam[Warehouse],
        caches: dg.ResourceParam[RegionCaches],
    ) -> dict:
        totals = rehydrate_region(run_services(project, state, warehouse, caches), region)
        context.log.info(f"rehydrated region {region}: {totals}")
        return totals

    @dg.job(name=rehydrate_job_name(region), description=f"Rebuild region {region}'s Memcached from durable state.")
    def rehydrate_job():
        rehydrate()

    return rehydrate_job
