"""Where the data comes from: collections, their syncs, models, upstream dbt nodes and runs.

The configuration part is computed once at start-up; runs and data age are read from the state
on each call (these endpoints are for people and tools, not for send time).
"""

from __future__ import annotations

import time
from typing import Any

import falcon

from orchestration.config.load import Project
from orchestration.config.specs import SyncSpec
from orchestration.store.state import RunStatus, StateStore, SyncRun
from serving import errors
from serving.auth import may_read, require_collection_scope
from serving.records import reject_unknown_parameters
from serving.state_reads import StateReads, StateUnavailable

MAX_RUNS = 100
DEFAULT_RUNS = 20


class CollectionsResource:
    """GET /v1/collections: the collections the key may read, with their indices and syncs."""

    def __init__(self, project: Project):
        self._collections = [_collection_summary(project, name) for name in project.collection_names]

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        key = req.context.key
        resp.media = {"collections": [c for c in self._collections if may_read(key, c["name"])]}


class LineageResource:
    """GET /v1/collections/{collection}/lineage"""

    def __init__(self, project: Project, state: StateStore, reads: StateReads):
        self._state = state
        self._reads = reads
        self._static = {name: _lineage(project, name) for name in project.collection_names}

    def on_get(self, req: falcon.Request, resp: falcon.Response, collection: str) -> None:
        static = self._static.get(collection)
        if static is None:
            raise errors.unknown_collection(collection)
        require_collection_scope(req, collection)
        now = time.time()
        names = [sync["name"] for sync in static["syncs"]]
        runs = _read_state(self._reads, lambda: [
            (self._state.last_run(name), self._state.last_run_with_status(name, RunStatus.succeeded))
            for name in names
        ])  # one bounded read for every sync
        syncs = []
        for sync, (last, last_success) in zip(static["syncs"], runs):
            syncs.append({
                **sync,
                "last_run": _run(last, samples=False),
                "last_successful_run": _run(last_success, samples=False),
                "data_age_seconds": round(now - last_success.started_at, 3) if last_success else None,
            })
        resp.media = {**static, "syncs": syncs}


class SyncRunsResource:
    """GET /v1/syncs/{sync}/runs?limit=N: recent runs with counts and rejection samples."""

    def __init__(self, project: Project, state: StateStore, reads: StateReads):
        self._state = state
        self._reads = reads
        self._collection_of = {d.spec.name: d.spec.collection for d in project.syncs}

    def on_get(self, req: falcon.Request, resp: falcon.Response, sync: str) -> None:
        collection = self._collection_of.get(sync)
        if collection is None:
            raise errors.unknown_sync(sync)
        require_collection_scope(req, collection)
        reject_unknown_parameters(req, {"limit"})
        limit = _limit(req.get_param("limit"))
        runs = _read_state(self._reads, lambda: self._state.recent_runs(sync, limit=limit))
        resp.media = {"sync": sync, "collection": collection, "runs": [_run(run, samples=True) for run in runs]}


def _limit(text: str | None) -> int:
    if text is None:
        return DEFAULT_RUNS
    if not text.isdigit() or not 1 <= int(text) <= MAX_RUNS:
        raise errors.invalid_parameter(f"limit must be an integer from 1 to {MAX_RUNS}")
    return int(text)


def _read_state(reads: StateReads, read):
    try:
        return reads(read)
    except StateUnavailable as error:  # say so rather than answer half
        raise errors.state_unavailable(str(error)) from error


def _collection_summary(project: Project, name: str) -> dict[str, Any]:
    spec = project.collection(name)
    return {
        "name": name,
        "description": spec.description,
        "max_age": spec.max_age,
        "primary_index": project.primary_index_of(name),
        "indices": list(project.indices_of(name)),
        "syncs": [s.name for s in project.syncs_for(name)],
        "lookup": f"/v1/collections/{name}/records/{{index_key}}/{{index_value}}",
    }


def _lineage(project: Project, name: str) -> dict[str, Any]:
    specs = project.syncs_for(name)
    return {
        **_collection_summary(project, name),
        "syncs": [_sync(project, spec) for spec in specs],
        "fields": [_field(spec, f) for spec in specs for f in spec.fields],
    }


def _sync(project: Project, spec: SyncSpec) -> dict[str, Any]:
    source = project.source_of(spec.name)
    return {
        "name": spec.name,
        "description": spec.description,
        "owners": list(spec.owners),
        "declared_in": {"kind": source.kind, "location": source.location},
        "model": _model(project, spec),
        "primary_index": spec.primary_index,
        "indices": list(spec.index_names),
        "delete": spec.delete.value,
        "trigger": spec.trigger.model_dump(mode="json"),
        "regions": list(project.regions_of(spec)),
    }


def _model(project: Project, spec: SyncSpec) -> dict[str, Any]:
    if spec.model.sql is not None:
        return {"kind": "sql", "sql": spec.model.sql, "upstream": []}
    info = project.dbt_models.get(spec.model.dbt)
    if info is None:
        return {"kind": "dbt", "name": spec.model.dbt, "upstream": []}
    return {
        "kind": "dbt",
        "name": info.name,
        "unique_id": info.unique_id,
        "relation": info.relation,
        "file": info.file,
        "description": info.description,
        "upstream": list(info.upstream),
    }


def _field(spec: SyncSpec, field) -> dict[str, Any]:
    source = {"column": field.column} if field.column is not None else {"liquid": field.liquid}
    return {"field": field.target, "sync": spec.name, "source": source, "type": field.type.value}


def _run(run: SyncRun | None, *, samples: bool) -> dict[str, Any] | None:
    if run is None:
        return None
    duration = run.duration
    described = {
        "id": run.id,
        "status": run.status.value,
        "full_resync": run.full_resync,
        "started_at": run.started_at,
        "finished_at": run.finished_at,
        "duration_seconds": round(duration, 3) if duration is not None else None,
        "regions": run.regions,
        "counts": run.counts,
        "error": run.error,
        "origin": run.origin,
    }
    if samples:
        described["rejection_samples"] = run.rejection_samples
    return described
