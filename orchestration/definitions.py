"""Larder's Dagster code location: read like a table of contents.

Everything is built from the project's configuration (larder.yaml, sync files, dbt meta), so a
new sync needs no Python. Importing this module does nothing: Dagster calls `defs` when it loads
the code location, which loads the project once; the assets and the run resources all use that
one project.
"""

import dagster as dg

from orchestration.assets.collections import build_collection_assets
from orchestration.assets.dbt import build_dbt_assets, dbt_column_descriptions, dbt_project_of, dbt_resource
from orchestration.assets.models import build_model_assets
from orchestration.assets.syncs import build_sync_assets
from orchestration.config.load import Project, load_project
from orchestration.jobs import build_bootstrap_job, build_dbt_jobs, build_rehydrate_jobs, build_sync_jobs
from orchestration.resources import build_resources
from orchestration.sensors import build_cache_loss_sensors
from orchestration.triggers import automation_conditions, build_automation_sensor, build_schedules

# Every step of a run shares the run's process: a sync's steps are short, and a process per step
# (Dagster's default) would spend longer importing the code location than working.
EXECUTOR = dg.in_process_executor


def build_definitions(project: Project) -> dg.Definitions:
    dbt = dbt_project_of(project)
    dbt_models = build_dbt_assets(project, dbt) if dbt else None
    automation = automation_conditions(project)
    return dg.Definitions(
        assets=[
            *([dbt_models] if dbt_models else []),
            *build_model_assets(project, automation, dbt_column_descriptions(dbt)),
            *build_sync_assets(project, automation, dbt_models),
            *build_collection_assets(project, automation),
        ],
        jobs=[
            *build_dbt_jobs(project),
            *build_sync_jobs(project),
            *build_rehydrate_jobs(project),
            build_bootstrap_job(),
        ],
        schedules=build_schedules(project),
        sensors=[build_automation_sensor(), *build_cache_loss_sensors(project)],
        executor=EXECUTOR,
        resources={
            **build_resources(project),
            **({"dbt_cli": dbt_resource(dbt)} if dbt else {}),
        },
    )


@dg.definitions
def defs() -> dg.Definitions:
    """The code location of the project at $LARDER_CONFIG (else the demo's larder.yaml)."""
    return build_definitions(load_project())
