"""Where the data comes from: collections, their syncs, models, upstream dbt nodes and runs.

The configuration part is computed once at start-up; runs and data age are read from the state
on each call (these endpoints are for people and tools, not for send time).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import falcon

from orchestration.config.load import Project
from orchestration.config.specs import FieldSpec, SyncSpec
from orchestration.store.state import StateStore, SyncRun
from serving import errors
from serving.auth import may_read, require_collection_scope
from serving.contract import (
    DEFAULT_RUNS,
    MAX_RUNS,
    Collection,
    Collections,
    FieldLineage,
    FieldSource,
    Lineage,
    Model,
    Run,
    RunStatus,
    SyncDeclaration,
    SyncLineage,
    SyncRuns,
)
from serving.records import reject_unknown_parameters
from serving.state_reads import StateReads, StateUnavailable

T = TypeVar("T")


class CollectionsResource:
    """GET /v1/collections: the collections the key may read, with their indices and syncs."""

    def __init__(self, project: Project):
        self._collections = [_collection_summary(project, name) for name in project.collection_names]

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        key = req.context.key
        answer: Collections = {"collections": [c for c in self._collections if may_read(key, c["name"])]}
        resp.media = answer


class LineageResource:
    """GET /v1/collections/{collection}/lineage"""

    def __init__(self, project: Project, state: StateStore, reads: StateReads):
        self._state = state
        self._reads = reads
        self._summaries = {name: _collection_summary(project, name) for name in project.collection_names}
        self._syncs = {name: [_sync(project, spec) for spec in project.syncs_for(name)]
                       for name in project.collection_names}
        self._fields = {name: [_field(spec, f) for spec in project.syncs_for(name) for f in spec.fields]
                        for name in project.collection_names}

    def on_get(self, req: falcon.Request, resp: falcon.Response, collection: str) -> None:
        summary = self._summaries.get(collection)
        if summary is None:
            raise errors.unknown_collection(collection)
        require_collection_scope(req, collection)
        now = time.time()
        declared = self._syncs[collection]
        runs = _read_state(self._reads, lambda: [
            (self._state.last_run(sync["name"]),
             self._state.last_run_with_status(sync["name"], RunStatus.succeeded))
            for sync in declared
        ])  # one bounded read for every sync
        syncs: list[SyncLineage] = []
        for sync, (last, last_success) in zip(declared, runs, strict=True):
            success = _run(last_success, samples=False)
            syncs.append({
                **sync,
                "last_run": _run(last, samples=False),
                "last_successful_run": success,
                "data_age_seconds": round(now - success["started_at"], 3) if success else None,
            })
        answer: Lineage = {
            "name": summary["name"],
            "description": summary["description"],
            "max_age": summary["max_age"],
            "primary_index": summary["primary_index"],
            "indices": summary["indices"],
            "syncs": syncs,
            "lookup": summary["lookup"],
            "fields": self._fields[collection],
        }
        resp.media = answer


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
        answer: SyncRuns = {"sync": sync, "collection": collection,
                            "runs": [_run_shown(run, samples=True) for run in runs]}
        resp.media = answer


def _limit(text: str | None) -> int:
    if text is None:
        return DEFAULT_RUNS
    if not text.isdigit() or not 1 <= int(text) <= MAX_RUNS:
        raise errors.invalid_parameter(f"limit must be an integer from 1 to {MAX_RUNS}")
    return int(text)


def _read_state(reads: StateReads, read: Callable[[], T]) -> T:
    try:
        return reads(read)
    except StateUnavailable as error:  # say so rather than answer half
        raise errors.state_unavailable(str(error)) from error


def _collection_summary(project: Project, name: str) -> Collection:
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


def _sync(project: Project, spec: SyncSpec) -> SyncDeclaration:
    source = project.source_of(spec.name)
    return {
        "name": spec.name,
        "description": spec.description,
        "owners": list(spec.owners),
        "declared_in": {"kind": source.kind, "location": source.location},
        "model": _model(project, spec),
        "primary_index": spec.primary_index,
        "indices": list(spec.index_names),
        "delete": spec.delete,
        "trigger": spec.trigger.model_dump(mode="json"),
        "regions": list(project.regions_of(spec)),
    }


def _model(project: Project, spec: SyncSpec) -> Model:
    if spec.model.sql is not None:
        return {"kind": "sql", "sql": spec.model.sql, "upstream": []}
    name = spec.model.dbt or ""  # the configuration names a dbt model when it gives no SQL
    info = project.dbt_models.get(name)
    if info is None:
        return {"kind": "dbt", "name": name, "upstream": []}
    return {
        "kind": "dbt",
        "name": info.name,
        "unique_id": info.unique_id,
        "relation": info.relation,
        "file": info.file,
        "description": info.description,
        "upstream": list(info.upstream),
    }


def _field(spec: SyncSpec, field: FieldSpec) -> FieldLineage:
    source: FieldSource = {"column": field.column} if field.column is not None else {"liquid": field.liquid or ""}
    return {"field": field.target, "sync": spec.name, "source": source, "type": field.type}


def _run(run: SyncRun | None, *, samples: bool) -> Run | None:
    return _run_shown(run, samples=samples) if run is not None else None


def _run_shown(run: SyncRun, *, samples: bool) -> Run:
    """A run as the state store holds it, as the API shows it: the one place serving reads a run."""
    duration = run.duration
    shown: Run = {
        "id": run.id,
        "status": run.status,
        "full_resync": run.full_resync,
        "started_at": run.started_at,
        "finished_at": run.finished_at,
        "duration_seconds": round(duration, 3) if duration is not None else None,
        "regions": list(run.regions),
        "counts": run.counts,
        "error": run.error,
        "origin": run.origin,
    }
    if samples:
        shown["rejection_samples"] = run.rejection_samples
    return shown
