"""One asset per collection, fed by the syncs that write it: where their records merge.

Its page says what a record of the collection is made of (which sync writes which fields, which
sync owns which index) before anything runs, and, once materialized, how many records the durable
state holds and how many each sync contributes.
"""

# No `from __future__ import annotations`: Dagster reads the context and resource annotations.

import dagster as dg

from orchestration.assets.keys import collection_key, sync_key
from orchestration.assets.syncs import collection_syncs
from orchestration.config.load import Project
from orchestration.store.state import StateStore


def build_collection_assets(
    project: Project, automation: dict[dg.AssetKey, dg.AutomationCondition]
) -> list[dg.AssetsDefinition]:
    return [
        _collection_asset(project, name, automation.get(collection_key(name)))
        for name in project.collection_names
        if project.syncs_for(name)
    ]


def _collection_asset(project: Project, collection: str, condition: dg.AutomationCondition | None) -> dg.AssetsDefinition:
    specs = project.syncs_for(collection)
    settings = project.collection(collection)

    @dg.asset(
        key=collection_key(collection),
        deps=[sync_key(spec) for spec in specs],
        group_name=collection,
        description=_description(project, collection),
        owners=sorted({owner for spec in specs for owner in spec.owners}),
        kinds={"larder", "api"},
        tags={"larder/collection": collection},
        automation_condition=condition,
        metadata={
            "syncs": collection_syncs(project, collection),
            "indices": _indices(project, collection),
            "max_age_seconds": settings.max_age,
            "lookup": f"GET /v1/collections/{collection}/records/{{index}}/{{value}}",
        },
    )
    def collection_asset(context: dg.AssetExecutionContext, state: dg.ResourceParam[StateStore]) -> dg.MaterializeResult:
        counts = state.record_counts(collection)
        context.log.info(f"collection {collection}: {counts.records} records")
        return dg.MaterializeResult(
            metadata={
                "dagster/row_count": counts.records,
                "records_by_sync": dg.MetadataValue.json(counts.by_sync),
            }
        )

    return collection_asset


def _description(project: Project, collection: str) -> str:
    specs = project.syncs_for(collection)
    about = project.collection(collection).description or f"Collection {collection}"
    if len(specs) == 1:
        made_of = f"Its records are written by sync {specs[0].name}."
    else:
        made_of = (
            f"Each record merges the fields of {len(specs)} syncs ({', '.join(s.name for s in specs)}), "
            "joined on the primary index; each sync writes its own fields."
        )
    return f"{about}\n\n{made_of} Served at `/v1/collections/{collection}/records/{{index}}/{{value}}`."


def _indices(project: Project, collection: str) -> dg.TableMetadataValue:
    rows = []
    for spec in project.syncs_for(collection):
        for index in spec.index_names:
            if index == spec.primary_index and rows:
                continue  # every sync of the collection shares the primary index: list it once
            role = "primary" if index == spec.primary_index else "extra"
            rows.append(dg.TableRecord({"index": index, "role": role, "declared_by": spec.name}))
    return dg.MetadataValue.table(
        records=rows,
        schema=dg.TableSchema(columns=[dg.TableColumn(name, "string") for name in ("index", "role", "declared_by")]),
    )
