"""One asset per sync: it writes the mapped records of its model to every region.

Its page shows what the sync does before it ever runs (the field mapping, the other syncs of its
collection) and what each run did (counts, rejections, the records written). A run first asks the
gate (assets/gate.py) whether failed checks upstream hold it back.
"""

# No `from __future__ import annotations`: Dagster reads the context, config and resource annotations.

import dagster as dg

from orchestration.assets.dbt import dbt_tests_upstream_of
from orchestration.assets.gate import Hold, guarding_checks, held_back_message, holds
from orchestration.assets.keys import dbt_model_key, model_key, sync_key
from orchestration.config.load import Project
from orchestration.config.specs import FieldSpec, ManualTrigger, ScheduleTrigger, SyncSpec
from orchestration.resources import RegionCaches, run_services
from orchestration.store.state import StateStore
from orchestration.sync import SyncFailed, SyncReport, run_sync
from orchestration.sync.warehouse import Warehouse

COUNT_NAMES = ("added", "changed", "rewritten", "removed", "kept", "rejected", "unchanged", "caught_up")
# In a run, a sync whose model is read goes before the next model: each collection is served as
# soon as its own model is read, not after every model of the run.
SYNC_STEP_PRIORITY = {"dagster/priority": "1"}


class SyncRunConfig(dg.Config):
    """What the launchpad lets a run change: a full resync, or only some regions."""

    full_resync: bool = False
    regions: list[str] = []


def build_sync_assets(
    project: Project,
    automation: dict[dg.AssetKey, dg.AutomationCondition],
    dbt_assets_def: dg.AssetsDefinition | None,
) -> list[dg.AssetsDefinition]:
    return [
        _sync_asset(project, d.spec, automation.get(sync_key(d.spec)), _guards(d.spec, dbt_assets_def))
        for d in project.syncs
    ]


def _guards(spec: SyncSpec, dbt_assets_def: dg.AssetsDefinition | None) -> tuple[dg.AssetCheckKey, ...]:
    dbt_tests = dbt_tests_upstream_of(dbt_assets_def, dbt_model_key(spec.model.dbt)) if spec.model.dbt else ()
    return guarding_checks(spec, dbt_tests)


def _sync_asset(
    project: Project, spec: SyncSpec, condition: dg.AutomationCondition | None, guards: tuple[dg.AssetCheckKey, ...]
) -> dg.AssetsDefinition:
    source = project.source_of(spec.name)

    @dg.asset(
        key=sync_key(spec),
        deps=[model_key(spec)],
        group_name=spec.collection,
        description=_description(project, spec, source.location),
        owners=list(spec.owners),
        kinds={"larder", "memcached"},
        tags={"larder/collection": spec.collection},
        automation_condition=condition,
        pool="warehouse",
        op_tags=SYNC_STEP_PRIORITY,
        metadata={
            "collection": spec.collection,
            "field_mapping": field_mapping(spec),
            "collection_syncs": collection_syncs(project, spec.collection),
            "indices": dg.MetadataValue.json(list(spec.index_names)),
            "delete_behaviour": spec.delete.value,
            "trigger": trigger_text(spec),
            "regions": dg.MetadataValue.json(list(project.regions_of(spec))),
            "guarded_by": dg.MetadataValue.json([key.to_user_string() for key in guards]),
            "declared_in": source.location,
        },
        check_specs=[_guard_check_spec(spec, guards)] if guards else None,
    )
    def sync_asset(
        context: dg.AssetExecutionContext,
        config: SyncRunConfig,
        state: dg.ResourceParam[StateStore],
        warehouse: dg.ResourceParam[Warehouse],
        caches: dg.ResourceParam[RegionCaches],
    ):
        failed = holds(context.instance, guards)
        if failed:
            yield _guard_result(spec, failed)
            raise dg.Failure(
                description=held_back_message(spec, failed),
                metadata={"held_back_by": _held_back_by(failed)},
                allow_retries=False,
            )
        try:
            report = run_sync(
                run_services(project, state, warehouse, caches),
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
        yield dg.MaterializeResult(
            metadata=sync_metadata(report),
            check_results=[_guard_result(spec, [])] if guards else None,
        )

    return sync_asset


def guard_check_name(spec: SyncSpec) -> str:
    return f"{spec.name}_not_held_back"


def _guard_check_spec(spec: SyncSpec, guards: tuple[dg.AssetCheckKey, ...]) -> dg.AssetCheckSpec:
    # A check on the sync itself: when the sync is held back, its node on the graph and its page
    # show a failed check that says why, where a failed run alone would only say that it failed.
    return dg.AssetCheckSpec(
        guard_check_name(spec),
        asset=sync_key(spec),
        description=(
            f"Passes while the {len(guards)} check(s) guarding sync {spec.name} pass; when one fails, the sync "
            "holds back and this check says which."
        ),
    )


def _guard_result(spec: SyncSpec, failed: list[Hold]) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        check_name=guard_check_name(spec),
        asset_key=sync_key(spec),
        passed=not failed,
        severity=dg.AssetCheckSeverity.ERROR,
        description=held_back_message(spec, failed) if failed else "every check guarding the sync passed",
        metadata={"held_back_by": _held_back_by(failed)},
    )


def _held_back_by(failed: list[Hold]) -> dg.JsonMetadataValue:
    return dg.MetadataValue.json([hold.as_metadata() for hold in failed])


def field_mapping(spec: SyncSpec) -> dg.TableMetadataValue:
    """Each record field: where it comes from (a column or a Liquid template), its type, its index."""
    return dg.MetadataValue.table(
        records=[
            dg.TableRecord({
                "field": f.target,
                "source": _source_text(f),
                "type": f.type.value,
                "index": _index_role(spec, f),
            })
            for f in spec.fields
        ],
        schema=dg.TableSchema(columns=[
            dg.TableColumn("field", "string", description="the record path it writes (dots nest)"),
            dg.TableColumn("source", "string", description="the model column, or the Liquid template"),
            dg.TableColumn("type", "string"),
            dg.TableColumn("index", "string", description="primary, extra, or none"),
        ]),
    )


def collection_syncs(project: Project, collection: str) -> dg.TableMetadataValue:
    """Every sync writing the collection, and the fields each one owns in its records."""
    return dg.MetadataValue.table(
        records=[
            dg.TableRecord({
                "sync": spec.name,
                "model": spec.model.dbt or "inline SQL",
                "fields": ", ".join(f.target for f in spec.fields),
                "trigger": trigger_text(spec),
                "delete": spec.delete.value,
            })
            for spec in project.syncs_for(collection)
        ],
        schema=dg.TableSchema(columns=[
            dg.TableColumn(name, "string") for name in ("sync", "model", "fields", "trigger", "delete")
        ]),
    )


def trigger_text(spec: SyncSpec) -> str:
    if isinstance(spec.trigger, ScheduleTrigger):
        return f"schedule {spec.trigger.schedule} ({spec.trigger.timezone})"
    if isinstance(spec.trigger, ManualTrigger):
        return "manual"
    return "on upstream change"


def _description(project: Project, spec: SyncSpec, location: str) -> str:
    others = [other.name for other in project.syncs_for(spec.collection) if other.name != spec.name]
    merge = (
        f" Its records merge with those of {', '.join(others)}: each sync writes its own fields."
        if others else ""
    )
    mapping = "\n".join(
        f"| `{f.target}` | {_source_text(f, markdown=True)} | {f.type.value} | {_index_role(spec, f)} |"
        for f in spec.fields
    )
    return (
        f"{spec.description or f'Sync {spec.name}'}\n\n"
        f"Writes collection **{spec.collection}** by `{spec.primary_index}`.{merge} Declared in {location}.\n\n"
        f"| field | from | type | index |\n|---|---|---|---|\n{mapping}"
    )


def _source_text(f: FieldSpec, *, markdown: bool = False) -> str:
    if f.column is not None:
        return f"column `{f.column}`" if markdown else f.column
    if not markdown:
        return f.liquid
    return "Liquid `" + f.liquid.replace("|", "\\|").replace("`", "'") + "`"


def _index_role(spec: SyncSpec, f: FieldSpec) -> str:
    if f.target == spec.primary_index:
        return "primary"
    return "extra" if f.target in spec.indices else ""


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
