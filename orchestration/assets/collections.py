"""One asset per sync: the collection materialization that writes mapped records to every region."""

# No `from __future__ import annotations`: Dagster reads the context, config and resource annotations.

import dagster as dg

from orchestration.assets.models import model_key
from orchestration.config.load import Project
from orchestration.config.specs import SyncSpec
from orchestration.resources import LarderResource
from orchestration.sync import SyncFailed, SyncReport, run_sync

COLLECTION_KEY_PREFIX = "collection"
COUNT_NAMES = ("added", "changed", "rewritten", "removed", "kept", "rejected", "unchanged", "caught_up")


class SyncRunConfig(dg.Config):
    """What the launchpad lets a run change: a full resync, or only some regions."""

    full_resync: bool = False
    regions: list[str] = []


def sync_key(spec: SyncSpec) -> dg.AssetKey:
    return dg.AssetKey([COLLECTION_KEY_PREFIX, spec.collection, spec.name])


def build_sync_assets(project: Project, automation: dict[dg.AssetKey, dg.AutomationCondition]) -> list[dg.AssetsDefinition]:
    return [_sync_asset(project, d.spec, automation.get(sync_key(d.spec))) for d in project.syncs]


def _sync_asset(project: Project, spec: SyncSpec, condition: dg.AutomationCondition | None) -> dg.AssetsDefinition:
    source = project.source_of(spec.name)

    @dg.asset(
        key=sync_key(spec),
        deps=[model_key(spec)],
        group_name=spec.collection,
        description=(spec.description or f"Sync {spec.name}") + f"\n\nDeclared in {source.location}.",
        owners=list(spec.owners),
        kinds={"memcached"},
        tags={"larder/collection": spec.collection},
        automation_condition=condition,
        pool="warehouse",
        metadata={
            "collection": spec.collection,
            "indices": dg.MetadataValue.json(list(spec.index_names)),
            "delete_behaviour": spec.delete.value,
            "regions": dg.MetadataValue.json(list(project.regions_of(spec))),
            "declared_in": source.location,
        },
    )
    def sync_asset(context: dg.AssetExecutionContext, config: SyncRunConfig, larder: LarderResource) -> dg.MaterializeResult:
        with larder.services() as services:
            try:
                report = run_sync(
                    services,
                    spec.name,
                    full_resync=config.full_resync,
                    regions=config.regions or None,
                    origin=f"dagster:{context.run_id}",
                    progress=lambda phase, counts: context.log.info(f"{phase}: {counts}"),
                )
            except SyncFailed as error:
                raise dg.Failure(
                    description=str(error),
                    metadata=sync_metadata(error.report) if error.report else {},
                ) from error
            except ValueError as error:  # a region the sync does not write
                raise dg.Failure(description=str(error)) from error
        return dg.MaterializeResult(metadata=sync_metadata(report))

    return sync_asset


def sync_metadata(report: SyncReport) -> dict[str, dg.MetadataValue]:
    """What a sync run's page shows: counts, duration, regions, rejections and written records."""
    return {
        **{name: dg.MetadataValue.int(report.counts.get(name, 0)) for name in COUNT_NAMES},
        "rows_read": dg.MetadataValue.int(report.counts.get("rows_read", 0)),
        "written": dg.MetadataValue.int(report.counts.get("written", 0)),
        "duration_seconds": dg.MetadataValue.float(round(report.duration_seconds, 3)),
        "regions": dg.MetadataValue.json(list(report.regions)),
        "full_resync": dg.MetadataValue.bool(report.full_resync),
        "larder_run_id": dg.MetadataValue.int(report.run_id),
        "rejection_samples": dg.MetadataValue.json(report.rejection_samples),
        "written_preview": dg.MetadataValue.json(report.written_preview),
    }
