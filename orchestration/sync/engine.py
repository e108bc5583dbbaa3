"""The sync engine's entry points: `run_sync` and `rehydrate_region`.

Plain Python: the Dagster assets, the CLI and the tests all call these.
"""

from __future__ import annotations

import functools
import itertools
import time
import uuid
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from orchestration.config.load import Project
from orchestration.store.cache import RecordCache
from orchestration.store.state import RunStatus, StateStore
from orchestration.sync.apply import CollectionLayout, apply_removals, prepare_changes, settle_collection
from orchestration.sync.diff import SyncPlan, fill_sample_rows, plan_delta, plan_scanned, plan_sync, spilled_records
from orchestration.sync.lease import CollectionLease
from orchestration.sync.mapping import MappedRecord, RecordMapper
from orchestration.sync.pipeline import WritePipeline
from orchestration.sync.processes import rare_collections
from orchestration.sync.shares import ShareWorkers
from orchestration.sync.warehouse import Warehouse
from orchestration.sync.workers import SplittableDelta, default_workers, mapped_in_workers
from orchestration.sync.writers import WriteJob, default_write_workers, write_in_processes

# A run that has not reported for this long is taken to have died (its process was killed).
ABANDONED_AFTER_SECONDS = 300
# How many written records a report keeps, so the run's page can show what it wrote.
WRITTEN_PREVIEW_RECORDS = 20
# How often a run records its progress and renews its lease while it reads or writes: far below
# the lease's time to live, and rare enough that these small commits cost nothing.
HEARTBEAT_SECONDS = 1.0


class SyncFailed(RuntimeError):
    """A run that stopped before writing (too many rejections, bad model) or while writing."""

    def __init__(self, message: str, report: SyncReport | None = None):
        super().__init__(message)
        self.report = report


@dataclass
class SyncReport:
    sync_name: str
    run_id: int
    status: str
    full_resync: bool
    regions: tuple[str, ...]
    counts: dict[str, int]
    duration_seconds: float
    rejection_samples: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    written_preview: list[dict[str, Any]] = field(default_factory=list)  # first records written: this sync's fields


Progress = Callable[[str, dict[str, int]], None]


class Throttle:
    """`due()` is true at most once per `seconds`."""

    def __init__(self, seconds: float):
        self._seconds = seconds
        self._last = time.monotonic()

    def due(self) -> bool:
        now = time.monotonic()
        if now - self._last < self._seconds:
            return False
        self._last = now
        return True


class Services:
    """The connections a run needs, opened once from the project and closed together."""

    def __init__(self, project: Project, *, state: StateStore | None = None, warehouse: Warehouse | None = None):
        self.project = project
        self.state = state or StateStore(project.spec.state.url)
        self.warehouse = warehouse or Warehouse(project.spec.warehouse.url)
        self._caches: dict[str, RecordCache] = {}

    def cache(self, region: str) -> RecordCache:
        if region not in self._caches:
            self._caches[region] = RecordCache(self.project.regions[region].servers)
        return self._caches[region]

    def caches(self, regions: Sequence[str]) -> dict[str, RecordCache]:
        return {region: self.cache(region) for region in regions}

    def sync_order(self, collection: str) -> tuple[str, ...]:
        return tuple(spec.name for spec in self.project.syncs_for(collection))

    def collection_regions(self, collection: str) -> tuple[str, ...]:
        """Every region that serves the collection: those its syncs list, enabled or not (a
        disabled region is owed what it misses, and catches up once enabled again)."""
        listed: set[str] = set()
        for spec in self.project.syncs_for(collection):
            listed.update(spec.regions if spec.regions is not None else self.project.regions)
        return tuple(region for region in self.project.regions if region in listed)

    def close(self) -> None:
        for cache in self._caches.values():
            cache.close()
        self.warehouse.dispose()
        self.state.dispose()


def run_sync(
    services: Services,
    sync_name: str,
    *,
    full_resync: bool = False,
    regions: Sequence[str] | None = None,
    origin: str = "",
    progress: Progress | None = None,
) -> SyncReport:
    """Run one sync: read the model, diff against the snapshot, write state and caches.

    Raises SyncFailed (with the report) when the run fails; the run is recorded either way.
    """
    with rare_collections():
        return _run_sync(services, sync_name, full_resync=full_resync, regions=regions, origin=origin,
                         progress=progress)


def _run_sync(services: Services, sync_name: str, *, full_resync: bool, regions: Sequence[str] | None,
              origin: str, progress: Progress | None) -> SyncReport:
    project, state = services.project, services.state
    spec = project.sync(sync_name)
    targets = _target_regions(project, spec, regions)
    caches = services.caches(targets)
    state.create_all()
    state.mark_abandoned_runs(sync_name, stale_after=ABANDONED_AFTER_SECONDS)
    started = time.monotonic()
    run_id = state.start_run(sync_name, full_resync=full_resync, regions=targets, origin=origin)
    lease = CollectionLease(state, spec.collection, f"run {run_id} of sync {sync_name!r}", run_id=run_id)
    counts: dict[str, int] = {}
    written_preview: list[dict[str, Any]] = []
    plan = None

    def report(status: str, error: str | None = None) -> SyncReport:
        return SyncReport(
            sync_name, run_id, status, full_resync, targets, counts,
            time.monotonic() - started, plan.rejection_samples if plan else [], error, written_preview,
        )

    beat = Throttle(HEARTBEAT_SECONDS)

    def heartbeat() -> None:
        if beat.due():
            state.heartbeat(run_id, counts)
            lease.renew()

    try:
        _acquire_for_run(services, lease, counts, progress)

        def on_catch_up(settled: int) -> None:
            counts["caught_up"] = settled
            heartbeat()
            if progress:
                progress("catch up", counts)

        caught_up = _catch_up(services, lease, targets, on_catch_up)
        layout = CollectionLayout(  # read under the lease: the sync's own earlier run may have added tombstones
            spec, services.sync_order(spec.collection),
            owed_regions=tuple(r for r in services.collection_regions(spec.collection) if r not in targets),
            has_tombstones=state.has_tombstones(spec.collection, spec.name),
        )
        sql = project.model_sql(spec)
        project.check_columns(spec, services.warehouse.columns(sql))
        mapper = RecordMapper(spec, max_record_bytes=project.max_record_bytes(spec))

        def on_scan(scan_counts: dict[str, int]) -> None:
            counts.update(scan_counts)
            heartbeat()
            if progress:
                progress("scan", counts)

        job = _write_job(services, layout, lease, caches, run_id)
        plan = _plan(services, sql, mapper, full_resync=full_resync, progress=on_scan, job=job)
        counts.update(plan.counts)
        counts["caught_up"] = caught_up
        if plan.samples_missing_rows:
            fill_sample_rows(plan, _rows_of(services, sql, mapper, plan.samples_missing_rows), mapper)
        if plan.rejected_share > spec.rejections.max_share:
            raise SyncFailed(
                f"{plan.rejected} of {plan.rows_read} rows rejected ({plan.rejected_share:.1%}), over the "
                f"{spec.rejections.max_share:.1%} allowed; nothing was written"
            )
        written = _write_changes(services, plan, layout, lease, caches, run_id, counts, written_preview, progress,
                                 beat, job)
        removal = apply_removals(plan.removed_pks, layout, state, caches, run_id, lease)
        counts["removed"] = removal.removed
        counts["kept"] = len(plan.removed_pks) - removal.removed
        counts["written"] = written + removal.written
        # Recorded before the lease is released: the run that waited for it sees this one finished.
        state.finish_run(run_id, status=RunStatus.succeeded, counts=counts, rejection_samples=plan.rejection_samples)
    except Exception as error:  # recorded, then re-raised with the report attached
        message = str(error) or type(error).__name__
        state.finish_run(run_id, status=RunStatus.failed, counts=counts,
                         rejection_samples=plan.rejection_samples if plan else [], error=message)
        failed = report("failed", message)
        raise SyncFailed(f"sync {sync_name!r} failed: {message}", failed) from error
    finally:
        if plan is not None:
            plan.close()
        lease.release()
    return report("succeeded")


def _write_changes(services: Services, plan: SyncPlan, layout: CollectionLayout, lease: CollectionLease,
                   caches: dict[str, RecordCache], run_id: int, counts: dict[str, int], preview: list[dict[str, Any]],
                   progress: Progress | None, beat: Throttle, job: WriteJob | None) -> int:
    """Write the plan's added and changed records to state and every region; returns how many
    (`counts["written"]` says it meanwhile). A large first sync is written by several processes:
    those that scanned it (see shares.py), or writers given the plan's records (see writers.py);
    anything else by the write pipeline of this process (see pipeline.py)."""
    state, defaults = services.state, services.project.spec.defaults

    def wrote(written: int) -> None:
        counts["written"] = written
        if progress:
            progress("write", counts)

    def on_progress(written: int) -> None:  # between two commits: the writers renew the lease
        wrote(written)
        state.heartbeat(run_id, counts)

    rejected = frozenset(plan.rejected_pks)
    if plan.shares is not None:
        _add_to_preview(preview, [record for record in plan.shares.preview if record.pk not in rejected])
        return plan.shares.write(rejected, on_progress)
    if job is not None and plan.first_sync and plan.records_to_write >= defaults.parallel_min_rows:
        blocks = _previewed(plan.spilled_blocks(), rejected, preview)
        return write_in_processes(blocks, job, rejected, workers=_write_workers(services), on_progress=on_progress)
    written = 0
    with WritePipeline(state, caches, lease) as pipeline:  # prepare, commit and cache writes overlap
        for chunk in plan.changed_records(defaults.chunk_size):
            pipeline.submit(prepare_changes(chunk, layout, run_id))
            written += len(chunk)
            _add_to_preview(preview, chunk)
            wrote(written)
            if beat.due():  # each commit renews the lease; the run's progress is recorded between commits
                pipeline.heartbeat(run_id, counts)
        pipeline.drain()
    return written


def _write_workers(services: Services) -> int:
    return services.project.spec.defaults.write_workers or default_write_workers()


def _write_job(services: Services, layout: CollectionLayout, lease: CollectionLease, caches: dict[str, RecordCache],
               run_id: int) -> WriteJob | None:
    """What writer processes need to write this run's records, or None when they may not: a single
    write worker, or a sync with tombstones (a record it writes may lift one, which no chunk
    written apart from the others may do)."""
    if layout.has_tombstones or _write_workers(services) < 2:
        return None
    return WriteJob(services.state.url, {region: cache.servers for region, cache in caches.items()}, layout, run_id,
                    lease.holder, lease.token, lease.ttl, services.project.spec.defaults.chunk_size)


def _previewed(blocks: Iterator[bytes], rejected: Collection[str], preview: list[dict[str, Any]]) -> Iterator[bytes]:
    """The blocks, with the first records they hold added to `preview` on the way."""
    for block in blocks:
        if len(preview) < WRITTEN_PREVIEW_RECORDS:
            _add_to_preview(preview, spilled_records(block, rejected))
        yield block


def _add_to_preview(preview: list[dict[str, Any]], records: Sequence[MappedRecord]) -> None:
    for record in records[: WRITTEN_PREVIEW_RECORDS - len(preview)]:
        preview.append(orjson.loads(record.body))


def _acquire_for_run(services: Services, lease: CollectionLease, counts: dict[str, int], progress: Progress | None) -> None:
    """Wait for the collection's lease; the waiting run keeps its heartbeat and reports once that it waits."""
    reported = False

    def on_wait(_holder) -> None:
        nonlocal reported
        services.state.heartbeat(lease.run_id, counts)
        if progress and not reported:
            reported = True
            progress("wait", counts)

    lease.acquire(wait_seconds=services.project.spec.defaults.lease_wait_seconds, on_wait=on_wait)


def _catch_up(services: Services, lease: CollectionLease, regions: Sequence[str],
              on_batch: Callable[[int], None]) -> int:
    """Write `regions` what earlier runs left them owing (crashed runs' journal entries included):
    this collection's under the run's own lease, another collection's crash leftovers only if nobody
    holds its lease now (else its writer does it). Returns the keys written or removed."""
    state, project = services.state, services.project
    state.forget_regions_except(tuple(project.regions))
    settled = settle_collection(state, services.cache, services.sync_order(lease.collection),
                                collection=lease.collection, regions=regions, lease=lease, on_batch=on_batch)
    for collection in state.journal_collections() - {lease.collection}:
        other = CollectionLease(state, collection, f"journal replay by {lease.holder}")
        if other.try_acquire():
            try:
                settle_collection(state, services.cache, services.sync_order(collection), collection=collection,
                                  regions=[r for r in regions if r in services.collection_regions(collection)],
                                  lease=other)
            finally:
                other.release()
    return settled


def _plan(services: Services, sql: str, mapper: RecordMapper, *, full_resync: bool, progress,
          job: WriteJob | None) -> SyncPlan:
    """Diff the model against the snapshot: inside the warehouse when it can (only rows that
    changed are then mapped), else by mapping every row in Python. When every row of a large
    model is to be mapped, worker processes read and map it: for a first sync, they also keep
    the records and write them later (`job`, see shares.py), else they send them here (workers.py)."""
    snapshot, first_sync = _peek_empty(services.state.iter_snapshot(mapper.spec.name))
    plan = _planned(services, sql, mapper, snapshot, first_sync, full_resync=full_resync, progress=progress, job=job)
    plan.first_sync = first_sync
    return plan


def _planned(services: Services, sql: str, mapper: RecordMapper, snapshot: Iterator[list], first_sync: bool, *,
             full_resync: bool, progress, job: WriteJob | None) -> SyncPlan:
    spec, warehouse, state = mapper.spec, services.warehouse, services.state
    defaults = services.project.spec.defaults
    options = {"full_resync": full_resync, "max_samples": spec.rejections.samples, "progress": progress}
    delta = warehouse.delta(sql, mapper, snapshot=snapshot, rewrite_all=full_resync, chunk_size=defaults.chunk_size)
    if delta is None:
        return plan_sync(warehouse.iter_chunks(sql, defaults.chunk_size), mapper, state.snapshot(spec.name), **options)

    def waiting() -> None:  # while workers' deltas split: the run reports progress, and keeps its lease
        progress({})

    @functools.cache
    def large() -> bool:  # (a count of the model: asked only when every row is to be mapped, once)
        return isinstance(delta, SplittableDelta) and warehouse.count(sql) >= defaults.parallel_min_rows

    if job is not None and first_sync and large():
        shares = ShareWorkers(delta, mapper, job, workers=_write_workers(services), on_wait=waiting).start()
        try:
            plan = plan_scanned(shares.scanned(), mapper, max_samples=spec.rejections.samples, progress=progress)
        except BaseException:
            shares.close()
            raise
        plan.shares = shares
        return plan
    previous_bodies = lambda pks: state.sync_fields_of(spec.name, pks)  # noqa: E731
    workers = defaults.sync_workers or default_workers()
    if workers > 1 and (first_sync or full_resync) and large():
        with mapped_in_workers(delta, mapper, workers=workers, hashed=False, on_wait=waiting) as mapped:
            return plan_delta(delta, mapper, previous_bodies=previous_bodies, mapped=mapped, **options)
    return plan_delta(delta, mapper, previous_bodies=previous_bodies, **options)


def _peek_empty(batches: Iterator[list]) -> tuple[Iterator[list], bool]:
    """(the same batches, whether there are none): a first sync maps every row of the model."""
    first = next(batches, None)
    if first is None:
        return iter(()), True
    return itertools.chain([first], batches), False


def _rows_of(services: Services, sql: str, mapper: RecordMapper, pks: Collection[str]) -> Iterator[list[dict[str, Any]]]:
    """The model's rows whose primary index is one of `pks` (a few, for rejection samples): filtered
    by the warehouse when it computes the primary index's text exactly, else by reading the model again."""
    warehouse, chunk_size = services.warehouse, services.project.spec.defaults.chunk_size
    index_columns = mapper.sql_index_columns(warehouse.column_types(sql))
    if index_columns is None:
        return warehouse.iter_chunks(sql, chunk_size)
    return warehouse.rows_with_keys(sql, index_columns[0], sorted(pks), chunk_size)


def rehydrate_region(services: Services, region: str, *, progress: Progress | None = None) -> dict[str, int]:
    """Rebuild a region's Memcached from durable state: every record under every index key.

    Each collection is rewritten under its lease (waiting for a sync writing it), so a record a
    sync changes meanwhile is never overwritten with the version read before.
    """
    state, cache = services.state, services.cache(region)
    state.create_all()
    totals = {"records": 0, "keys": 0}
    collections = set(state.collections_with_records()) | state.journal_collections() | state.owed_collections(region)
    with rare_collections():
        for collection in sorted(collections):
            lease = CollectionLease(state, collection, f"rehydrate of region {region!r}")
            lease.acquire(wait_seconds=services.project.spec.defaults.lease_wait_seconds)
            try:
                # Settles what the region is owed (keys of records removed meanwhile are deleted), then rewrites all.
                settle_collection(state, services.cache, services.sync_order(collection), collection=collection,
                                  regions=[region], lease=lease)
                _rehydrate_collection(services, cache, collection, lease, totals, progress)
            finally:
                lease.release()
    cache.write_sentinel(uuid.uuid4().hex)
    return totals


def _rehydrate_collection(services: Services, cache: RecordCache, collection: str, lease: CollectionLease,
                          totals: dict[str, int], progress: Progress | None) -> None:
    state, order = services.state, services.sync_order(collection)
    for pks in state.iter_collection_pks(collection):
        work = state.composed_records(collection, pks, order, fence=lease.renew)
        cache.set_many(work.values)
        totals["records"] += len(work.pks)
        totals["keys"] += len(work.values)
        if progress:
            progress("rehydrate", totals)


def _target_regions(project: Project, spec, regions: Sequence[str] | None) -> tuple[str, ...]:
    enabled = project.regions_of(spec)
    if regions is None:
        return enabled
    unknown = [r for r in regions if r not in enabled]
    if unknown:
        raise ValueError(f"sync {spec.name!r} does not write region(s) {', '.join(unknown)} (it writes {', '.join(enabled)})")
    return tuple(regions)

