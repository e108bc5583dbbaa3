"""Larder's Dagster code location: read like a table of contents.

Everything is built from the project's configuration (larder.yaml, sync files, dbt meta), so a
new sync needs no Python.
"""

import dagster as dg

from orchestration.assets.checks import build_sync_checks
from orchestration.assets.collections import build_sync_assets
from orchestration.assets.dbt import build_dbt_assets, dbt_project_of, dbt_resource
from orchestration.assets.models import build_model_assets
from orchestration.config.load import Project, load_project
from orchestration.jobs import build_dbt_jobs, build_rehydrate_jobs, build_sync_jobs
from orchestration.resources import LarderResource
from orchestration.sensors import build_cache_loss_sensors
from orchestration.triggers import automation_conditions, build_automation_sensor, build_schedules


# Every step of a run shares the run's process: a sync's steps are short, and a process per step
# (Dagster's default) would spend longer importing the code location than working.
EXECUTOR = dg.in_process_executor


def build_definitions(project: Project) -> dg.Definitions:
    dbt = dbt_project_of(project)
    automation = automation_conditions(project)
    return dg.Definitions(
        assets=[
            *([build_dbt_assets(dbt)] if dbt else []),
            *build_model_assets(project, automation),
            *build_sync_assets(project, automation),
        ],
        asset_checks=build_sync_checks(project),
        jobs=[*build_dbt_jobs(project), *build_sync_jobs(project), *build_rehydrate_jobs(project)],
        schedules=build_schedules(project),
        sensors=[build_automation_sensor(), *build_cache_loss_sensors(project)],
        executor=EXECUTOR,
        resources={
            "larder": LarderResource(config_path=str(project.path)),
            **({"dbt_cli": dbt_resource(dbt)} if dbt else {}),
        },
    )


defs = build_definitions(load_project())
