"""API keys (`api_keys`): hashed secrets with their scopes; a secret is never stored or shown twice."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from orchestration.store.state.schema import KEYS

KEY_PREFIX = "lk"


@dataclass(frozen=True)
class KeyInfo:
    """An API key as listed: never its secret."""

    name: str
    prefix: str
    secret_hash: str
    collections: tuple[str, ...] | None
    regions: tuple[str, ...] | None
    rate_limit: float | None
    created_at: float
    revoked_at: float | None


class UnknownApiKey(LookupError):
    """No API key by that name."""


def hash_secret(secret: str) -> str:
    # Secrets are 256-bit random tokens, so a fast hash is enough; there is nothing to brute-force.
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def split_secret(secret: str) -> str | None:
    """The lookup prefix of a presented secret (`lk_<prefix>_<token>`), or None if malformed."""
    parts = secret.split("_", 2)  # the token itself may contain "_"
    if len(parts) != 3 or parts[0] != KEY_PREFIX or len(parts[1]) != 8 or not parts[2]:
        return None
    return parts[1]


def secret_matches(secret: str, stored_hash: str) -> bool:
    return hmac.compare_digest(hash_secret(secret), stored_hash)


class ApiKeys:
    def __init__(self, engine: Engine):
        self.engine = engine

    def create(self, name: str, *, collections: Sequence[str] | None = None, regions: Sequence[str] | None = None,
               rate_limit: float | None = None) -> tuple[KeyInfo, str]:
        """Store a new key; returns it and its secret, which is never stored or shown again."""
        prefix = secrets.token_hex(4)
        secret = f"{KEY_PREFIX}_{prefix}_{secrets.token_urlsafe(32)}"
        key = KeyInfo(
            name=name, prefix=prefix, secret_hash=hash_secret(secret),
            collections=tuple(collections) if collections else None,
            regions=tuple(regions) if regions else None,
            rate_limit=rate_limit, created_at=time.time(), revoked_at=None,
        )
        with self.engine.begin() as conn:
            if conn.execute(sa.select(KEYS.c.id).where(KEYS.c.name == name)).first():
                raise ValueError(f"an API key named {name!r} already exists")
            conn.execute(KEYS.insert().values(
                name=key.name, prefix=key.prefix, secret_hash=key.secret_hash,
                collections=list(key.collections) if key.collections else None,
                regions=list(key.regions) if key.regions else None,
                rate_limit=key.rate_limit, created_at=key.created_at, revoked_at=None,
            ))
        return key, secret

    def list(self, *, include_revoked: bool = True) -> list[KeyInfo]:
        query = sa.select(KEYS).order_by(KEYS.c.created_at)
        if not include_revoked:
            query = query.where(KEYS.c.revoked_at.is_(None))
        with self.engine.connect() as conn:
            return [_key_info(row) for row in conn.execute(query)]

    def revoke(self, name: str) -> KeyInfo:
        """Revoke the key by name or prefix (revoking a revoked key again is no error)."""
        named = sa.or_(KEYS.c.name == name, KEYS.c.prefix == name)
        with self.engine.begin() as conn:
            updated = conn.execute(KEYS.update().where(named, KEYS.c.revoked_at.is_(None)).values(revoked_at=time.time()))
            row = conn.execute(sa.select(KEYS).where(named)).first()
        if row is None or (updated.rowcount == 0 and row.revoked_at is None):
            raise UnknownApiKey(f"no API key named {name!r}")
        return _key_info(row)


def _key_info(row: sa.Row) -> KeyInfo:
    return KeyInfo(
        name=row.name,
        prefix=row.prefix,
        secret_hash=row.secret_hash,
        collections=tuple(row.collections) if row.collections else None,
        regions=tuple(row.regions) if row.regions else None,
        rate_limit=row.rate_limit,
        created_at=row.created_at,
        revoked_at=row.revoked_at,
    )
