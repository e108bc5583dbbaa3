"""When syncs run: cron schedules, and 'on upstream change' through declarative automation."""

from __future__ import annotations

import dagster as dg

from orchestration.assets.models import model_name
from orchestration.config.load import Project
from orchestration.config.specs import ScheduleTrigger, UpstreamTrigger
from orchestration.jobs import sync_job_name

# Run as soon as any upstream (the model, then its dbt parents) has been updated.
ON_UPSTREAM_CHANGE = dg.AutomationCondition.eager()


def automation_conditions(project: Project) -> dict[str, dg.AutomationCondition | None]:
    """Sync name and model name → condition, for the syncs triggered by upstream changes."""
    conditions: dict[str, dg.AutomationCondition | None] = {}
    for declared in project.syncs:
        spec = declared.spec
        if isinstance(spec.trigger, UpstreamTrigger):
            conditions[spec.name] = ON_UPSTREAM_CHANGE
            conditions[model_name(spec)] = ON_UPSTREAM_CHANGE
    return conditions


def build_schedules(project: Project) -> list[dg.ScheduleDefinition]:
    return [
        dg.ScheduleDefinition(
            name=f"{d.spec.name}_schedule",
            job_name=sync_job_name(d.spec.name),
            cron_schedule=d.spec.trigger.schedule,
            execution_timezone=d.spec.trigger.timezone,
            default_status=dg.DefaultScheduleStatus.RUNNING,
        )
        for d in project.syncs
        if isinstance(d.spec.trigger, ScheduleTrigger)
    ]


def build_automation_sensor() -> dg.AutomationConditionSensorDefinition:
    return dg.AutomationConditionSensorDefinition(
        "larder_automation",
        target=dg.AssetSelection.all(),
        default_status=dg.DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=5,
    )
