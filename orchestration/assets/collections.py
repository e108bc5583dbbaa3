"""One asset per sync: the collection materialization that writes mapped records to every region."""


import dagster as dg

from orchestration.assets.models import model_key
from orchestration.config.load import Project
from orchestration.config.specs import SyncSpec
from orchestration.resources import LarderResource
from orchestration.sync import SyncFailed, run_sync

COLLECTION_KEY_PREFIX = "collection"


class SyncRunConfig(dg.Config):
    full_resync: bool = False
    regions: list[str] = []


def sync_key(spec: SyncSpec) -> dg.AssetKey:
    return dg.AssetKey([COLLECTION_KEY_PREFIX, spec.collection, spec.name])


def build_sync_assets(project: Project, automation: dict[str, dg.AutomationCondition | None]) -> list[dg.AssetsDefinition]:
    return [_sync_asset(project, declared.spec, automation.get(declared.spec.name)) for declared in project.syncs]


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
                samples = error.report.rejection_samples if error.report else []
                raise dg.Failure(
                    description=str(error),
                    metadata={"rejection_samples": dg.MetadataValue.json(samples)},
                ) from error
        return dg.MaterializeResult(
            metadata={
                **{name: dg.MetadataValue.int(value) for name, value in report.counts.items()},
                "duration_seconds": dg.MetadataValue.float(round(report.duration_seconds, 3)),
                "regions": dg.MetadataValue.json(list(report.regions)),
                "full_resync": report.full_resync,
                "larder_run_id": report.run_id,
                "rejection_samples": dg.MetadataValue.json(report.rejection_samples),
            }
        )

    return sync_asset
