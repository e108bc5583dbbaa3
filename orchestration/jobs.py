"""Jobs: one per sync (its model and collection asset), one for all syncs, one rehydrate per region,
and `dbt_build` for the dbt project (what a data team runs after changing a model or a seed)."""

# No `from __future__ import annotations`: Dagster reads the context and resource annotations.

import dagster as dg

from orchestration.assets.collections import COLLECTION_KEY_PREFIX, sync_key
from orchestration.assets.dbt import DBT_KEY_PREFIX
from orchestration.assets.models import MODEL_KEY_PREFIX, model_key
from orchestration.config.load import Project
from orchestration.resources import LarderResource
from orchestration.sync import rehydrate_region

DBT_JOB_NAME = "dbt_build"


def sync_job_name(sync_name: str) -> str:
    return f"sync_{sync_name}"


def rehydrate_job_name(region: str) -> str:
    return f"rehydrate_{region}"


def build_sync_jobs(project: Project) -> list:
    jobs = [
        dg.define_asset_job(
            sync_job_name(d.spec.name),
            selection=dg.AssetSelection.assets(model_key(d.spec), sync_key(d.spec)),
            description=f"Run sync {d.spec.name}: read its model, write collection {d.spec.collection}.",
        )
        for d in project.syncs
    ]
    jobs.append(
        dg.define_asset_job(
            "all_syncs",
            selection=dg.AssetSelection.key_prefixes(MODEL_KEY_PREFIX, COLLECTION_KEY_PREFIX),
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
            selection=dg.AssetSelection.key_prefixes(DBT_KEY_PREFIX),
            description="dbt build: seeds, models and their tests. Syncs on upstream change follow by themselves.",
        )
    ]


def build_rehydrate_jobs(project: Project) -> list[dg.JobDefinition]:
    return [_rehydrate_job(region) for region in project.enabled_regions]


def _rehydrate_job(region: str) -> dg.JobDefinition:
    @dg.op(name=f"rehydrate_{region}_cache")
    def rehydrate(context: dg.OpExecutionContext, larder: LarderResource) -> dict:
        with larder.services() as services:
            totals = rehydrate_region(services, region)
        context.log.info(f"rehydrated region {region}: {totals}")
        return totals

    @dg.job(name=rehydrate_job_name(region), description=f"Rebuild region {region}'s Memcached from durable state.")
    def rehydrate_job():
        rehydrate()

    return rehydrate_job
