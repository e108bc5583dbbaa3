"""When syncs run: cron schedules, and 'on upstream change' through declarative automation.

The automation sensor is evaluated by dagster-daemon's asset daemon, whose loop turns every 5
seconds; its own minimum interval matches, so a sync follows its dbt model within seconds.
"""

import dagster as dg

from orchestration.assets.keys import collection_key, model_key, sync_key
from orchestration.config.load import Project
from orchestration.config.specs import ScheduleTrigger, UpstreamTrigger
from orchestration.jobs import DBT_JOB_NAME, sync_job_name

# Run as soon as any upstream (the model, then its dbt parents) has been updated, and once when the
# asset is new. `eager()` alone counts its first evaluation as "handled" (so adding it to a
# deployment does not run everything missing): a sync added to a running stack whose dbt model does
# not change would never run. Here only a request or a materialization counts as handled.
ON_UPSTREAM_CHANGE = dg.AutomationCondition.eager().replace(
    "handled", dg.AutomationCondition.newly_requested() | dg.AutomationCondition.newly_updated()
).with_label("on_upstream_change")
AUTOMATION_INTERVAL_SECONDS = 5
# Production dbt projects rebuild daily; off until a team turns it on in the UI.
DBT_BUILD_SCHEDULE = "0 5 * * *"


def automation_conditions(project: Project) -> dict[dg.AssetKey, dg.AutomationCondition]:
    """Model and sync asset keys → condition, for the syncs triggered by upstream changes."""
    conditions: dict[dg.AssetKey, dg.AutomationCondition] = {}
    for declared in project.syncs:
        spec = declared.spec
        if isinstance(spec.trigger, UpstreamTrigger):
            conditions[sync_key(spec)] = ON_UPSTREAM_CHANGE
            conditions[model_key(spec)] = ON_UPSTREAM_CHANGE
            conditions[collection_key(spec.collection)] = ON_UPSTREAM_CHANGE
    return conditions


def build_schedules(project: Project) -> list[dg.ScheduleDefinition]:
    """A schedule per sync with a cron trigger, and a daily dbt build (stopped until turned on)."""
    return [*_sync_schedules(project), *_dbt_schedules(project)]


def _sync_schedules(project: Project) -> list[dg.ScheduleDefinition]:
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
        minimum_interval_seconds=AUTOMATION_INTERVAL_SECONDS,
        description="Runs each model and sync whose trigger is on_upstream_change once its upstream updates.",
    )


def _dbt_schedules(project: Project) -> list[dg.ScheduleDefinition]:
    if project.spec.dbt is None:
        return []
    return [
        dg.ScheduleDefinition(
            name=f"{DBT_JOB_NAME}_daily",
            job_name=DBT_JOB_NAME,
            cron_schedule=DBT_BUILD_SCHEDULE,
            default_status=dg.DefaultScheduleStatus.STOPPED,
            description="Rebuild the dbt project every morning; syncs on upstream change follow.",
        )
    ]
