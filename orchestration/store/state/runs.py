"""Sync runs (`sync_runs`): what each run did, and whether it is still running."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from orchestration.store.state.schema import RUNS


class RunStatus(str, Enum):
    running = "running"
    succeeded = "succeeded"
    failed = "failed"


@dataclass(frozen=True)
class SyncRun:
    """A run as stored: the one definition of a run's fields."""

    id: int
    sync_name: str
    status: RunStatus
    full_resync: bool
    started_at: float
    heartbeat_at: float
    finished_at: float | None
    regions: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    rejection_samples: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    origin: str = ""

    @property
    def duration(self) -> float | None:
        return self.finished_at - self.started_at if self.finished_at is not None else None


ABANDONED_ERROR = "abandoned: the run stopped without finishing"


class Runs:
    def __init__(self, engine: Engine):
        self.engine = engine

    def start(self, sync_name: str, *, full_resync: bool, regions: Sequence[str], origin: str = "") -> int:
        now = time.time()
        with self.engine.begin() as conn:
            result = conn.execute(
                RUNS.insert().values(
                    sync_name=sync_name, status=RunStatus.running.value, full_resync=full_resync,
                    started_at=now, heartbeat_at=now, regions=list(regions), counts={},
                    rejection_samples=[], origin=origin,
                )
            )
            return _inserted_id(result)

    def heartbeat(self, run_id: int, counts: dict[str, int]) -> None:
        with self.engine.begin() as conn:
            conn.execute(RUNS.update().where(RUNS.c.id == run_id).values(heartbeat_at=time.time(), counts=counts))

    def finish(self, run_id: int, *, status: RunStatus, counts: dict[str, int],
               rejection_samples: list[dict] | None = None, error: str | None = None) -> None:
        now = time.time()
        with self.engine.begin() as conn:
            conn.execute(
                RUNS.update()
                .where(RUNS.c.id == run_id)
                .values(status=RunStatus(status).value, finished_at=now, heartbeat_at=now, counts=counts,
                        rejection_samples=rejection_samples or [], error=error)
            )

    def recent(self, sync_name: str, limit: int = 20) -> list[SyncRun]:
        query = sa.select(RUNS).where(RUNS.c.sync_name == sync_name).order_by(RUNS.c.id.desc()).limit(limit)
        with self.engine.connect() as conn:
            return [_run(row) for row in conn.execute(query)]

    def last(self, sync_name: str) -> SyncRun | None:
        runs = self.recent(sync_name, limit=1)
        return runs[0] if runs else None

    def last_with_status(self, sync_name: str, status: RunStatus) -> SyncRun | None:
        """The newest run of a sync that ended with `status` (e.g. the last successful one)."""
        query = (
            sa.select(RUNS)
            .where(RUNS.c.sync_name == sync_name, RUNS.c.status == RunStatus(status).value)
            .order_by(RUNS.c.id.desc())
            .limit(1)
        )
        with self.engine.connect() as conn:
            row = conn.execute(query).first()
        return _run(row) if row else None

    def regions_of(self, run_id: int) -> list[str]:
        """The regions a run wrote (empty for an unknown run)."""
        with self.engine.connect() as conn:
            regions = conn.execute(sa.select(RUNS.c.regions).where(RUNS.c.id == run_id)).scalar()
        return list(regions or [])

    def mark_abandoned(self, sync_name: str, *, stale_after: float) -> int:
        """Runs still running with no heartbeat for `stale_after` seconds died: mark them failed."""
        cutoff = time.time() - stale_after
        with self.engine.begin() as conn:
            result = conn.execute(
                RUNS.update()
                .where(RUNS.c.sync_name == sync_name, RUNS.c.status == RunStatus.running.value,
                       RUNS.c.heartbeat_at < cutoff)
                .values(status=RunStatus.failed.value, finished_at=time.time(), error=ABANDONED_ERROR)
            )
            return result.rowcount

    def fail_overtaken(self, run_id: int, error: str) -> bool:
        """Mark a run that is still running failed (another run took its lease); True if it was."""
        now = time.time()
        with self.engine.begin() as conn:
            result = conn.execute(
                RUNS.update()
                .where(RUNS.c.id == run_id, RUNS.c.status == RunStatus.running.value)
                .values(status=RunStatus.failed.value, finished_at=now, heartbeat_at=now, error=error)
            )
            return result.rowcount == 1


def _run(row: sa.Row) -> SyncRun:
    return SyncRun(
        id=row.id, sync_name=row.sync_name, status=RunStatus(row.status), full_resync=bool(row.full_resync),
        started_at=row.started_at, heartbeat_at=row.heartbeat_at, finished_at=row.finished_at,
        regions=list(row.regions or []), counts=dict(row.counts or {}),
        rejection_samples=list(row.rejection_samples or []), error=row.error, origin=row.origin or "",
    )


def _inserted_id(result: sa.CursorResult) -> int:
    key = result.inserted_primary_key
    assert key is not None, "an insert of one row has its primary key"
    return int(key[0])
