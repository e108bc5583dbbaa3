"""Collection leases (`collection_leases`): which run may write each collection now.

The policy (waiting, taking over a dead holder's lease) is `orchestration/sync/lease.py`'s.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from orchestration.store.state.engine import dialect_insert
from orchestration.store.state.schema import LEASES


@dataclass(frozen=True)
class Lease:
    """A collection's lease as stored: who holds it and until when (epoch seconds)."""

    collection: str
    token: str
    holder: str
    run_id: int | None
    host: str
    pid: int
    expires_at: float


class Leases:
    def __init__(self, engine: Engine):
        self.engine = engine

    def acquire(self, lease: Lease) -> bool:
        """Take the collection's lease if it is free or expired, in one statement; True if taken."""
        row = asdict(lease)
        with self.engine.begin() as conn:
            insert = dialect_insert(conn)(LEASES).values(**row)
            statement = insert.on_conflict_do_update(
                index_elements=[LEASES.c.collection],
                set_={name: insert.excluded[name] for name in row if name != "collection"},
                where=LEASES.c.expires_at < time.time(),
            )
            # RETURNING, not rowcount: psycopg reports no rowcount for an upsert.
            return conn.execute(statement.returning(LEASES.c.token)).first() is not None

    def take_over(self, previous_token: str, lease: Lease) -> bool:
        """Replace the lease held under `previous_token` (its holder is known dead); False if it changed hands."""
        with self.engine.begin() as conn:
            result = conn.execute(
                LEASES.update()
                .where(LEASES.c.collection == lease.collection, LEASES.c.token == previous_token)
                .values(**asdict(lease))
            )
            return result.rowcount == 1

    def renew(self, collection: str, token: str, expires_at: float, conn: Connection | None = None) -> bool:
        """Extend a lease its holder still has; False if it expired and another run took it. With
        `conn`, inside that transaction: its writes then commit only if the lease was still held."""
        statement = (
            LEASES.update()
            .where(LEASES.c.collection == collection, LEASES.c.token == token)
            .values(expires_at=expires_at)
        )
        if conn is not None:
            return conn.execute(statement).rowcount == 1
        with self.engine.begin() as own:
            return own.execute(statement).rowcount == 1

    def release(self, collection: str, token: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(LEASES.delete().where(LEASES.c.collection == collection, LEASES.c.token == token))

    def of(self, collection: str) -> Lease | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(LEASES).where(LEASES.c.collection == collection)).first()
        return Lease(**row._mapping) if row else None
