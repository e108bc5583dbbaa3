"""Cache-loss sensors: one per region, launching its rehydrate job when Memcached lost its data.

`rehydrate_region` leaves a sentinel key on every server of the region; syncs never write it. A
server that answers without the sentinel was restarted, flushed or evicted it, so whatever else it
held may be gone too: the region is rebuilt from durable state.
"""

# No `from __future__ import annotations`: Dagster reads the context annotation.

import dagster as dg

from orchestration.config.load import Project
from orchestration.jobs import rehydrate_job_name
from orchestration.store.cache import CacheUnavailable, RecordCache

# Memcached loses data rarely; until the region is rebuilt every miss is answered from the (slower) state store.
CACHE_LOSS_INTERVAL_SECONDS = 10
IN_FLIGHT = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]


def cache_loss_sensor_name(region: str) -> str:
    return f"{region}_cache_loss"


def build_cache_loss_sensors(project: Project) -> list[dg.SensorDefinition]:
    return [_cache_loss_sensor(region, project.regions[region].servers) for region in project.enabled_regions]


def _cache_loss_sensor(region: str, servers: tuple[str, ...]) -> dg.SensorDefinition:
    job_name = rehydrate_job_name(region)

    @dg.sensor(
        name=cache_loss_sensor_name(region),
        job_name=job_name,
        minimum_interval_seconds=CACHE_LOSS_INTERVAL_SECONDS,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Launches {job_name} when a Memcached server of region {region} has lost its sentinel.",
    )
    def cache_loss(context: dg.SensorEvaluationContext):
        cache = RecordCache(servers)
        try:
            missing = cache.servers_missing_sentinel()
        except CacheUnavailable as error:
            return dg.SkipReason(f"region {region} is unreachable, nothing to rehydrate into yet: {error}")
        finally:
            cache.close()
        if not missing:
            return dg.SkipReason(f"every server of region {region} still holds its sentinel")
        if _rehydrate_in_flight(context.instance, job_name):
            return dg.SkipReason(f"{job_name} is already queued or running")
        return dg.RunRequest(job_name=job_name, tags={"larder/region": region, "larder/servers_lost": ",".join(missing)})

    return cache_loss


def _rehydrate_in_flight(instance: dg.DagsterInstance, job_name: str) -> bool:
    """A rehydrate already queued or running writes the sentinel when done: do not launch another."""
    return bool(instance.get_run_records(filters=dg.RunsFilter(job_name=job_name, statuses=IN_FLIGHT), limit=1))
