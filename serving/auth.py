"""API key checks: bearer secrets against hashed keys, refreshed from state every few seconds.

Each gunicorn worker keeps its own `KeyRing` and reloads the active keys when they are older than
`api.key_refresh_seconds` (at most 5), so a revocation reaches every worker within that time.
A per-key rate limit is a token bucket per worker: with W workers a key may make up to W × its
limit requests per second in total (documented in the README).
"""

from __future__ import annotations

import logging
import math
import threading
import time

import falcon

from orchestration.store.state import KeyInfo, StateStore, secret_matches, split_secret
from serving import errors

log = logging.getLogger("larder.api")

PUBLIC_PATHS = frozenset({"/healthz", "/readyz", "/openapi.json", "/metrics"})


class KeyRing:
    """The active keys by prefix; reloaded when older than `refresh_seconds` (revocations apply then).

    If the state store cannot be read, the last loaded keys stay in use (nobody can revoke a key
    while the state is down either); before any load succeeded, requests get 503 keys_unavailable.

    Secrets that matched are remembered until the next reload, so a key in use is hashed once per
    refresh interval rather than on every request; a revoked key's secret is forgotten with it.
    """

    def __init__(self, state: StateStore, *, refresh_seconds: float):
        self._state = state
        self._refresh_seconds = refresh_seconds
        # (active keys by prefix, secrets that matched → their key), swapped as one on each reload
        # so a secret checked against keys that were just replaced is never remembered.
        self._loaded: tuple[dict[str, KeyInfo], dict[str, KeyInfo]] | None = None
        self._loaded_at = float("-inf")
        self._lock = threading.Lock()

    def _refresh_if_stale(self) -> None:
        if time.monotonic() - self._loaded_at < self._refresh_seconds:
            return
        with self._lock:
            if time.monotonic() - self._loaded_at < self._refresh_seconds:
                return
            try:
                keys = self._state.list_keys(include_revoked=False)
            except Exception as error:  # keep the last keys; try again after the refresh interval
                log.warning("cannot reload API keys from state: %s", error)
            else:
                self._loaded = ({key.prefix: key for key in keys}, {})
            self._loaded_at = time.monotonic()

    def authenticate(self, secret: str) -> KeyInfo | None:
        """The key a presented secret belongs to, or None. A secret not yet seen since the last
        reload is hashed and compared in constant time."""
        self._refresh_if_stale()
        loaded = self._loaded
        if loaded is None:
            raise errors.keys_unavailable()
        keys, verified = loaded
        key = verified.get(secret)
        if key is not None:
            return key
        prefix = split_secret(secret)
        key = keys.get(prefix) if prefix else None
        if key is None or not secret_matches(secret, key.secret_hash):
            return None
        verified[secret] = key
        return key


class TokenBucket:
    """`rate` requests per second with bursts of up to max(1, rate), in this process."""

    __slots__ = ("rate", "capacity", "tokens", "updated")

    def __init__(self, rate: float):
        self.rate = rate
        self.capacity = max(1.0, rate)
        self.tokens = self.capacity
        self.updated = time.monotonic()

    def take(self) -> float:
        """0 when a request may go ahead, else the seconds until it could."""
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate


class AuthMiddleware:
    """Every /v1 request needs `Authorization: Bearer <key>`; the key lands in req.context.key.

    Then the key's region scope is checked, and its rate limit (the key's own, else the project's
    `api.rate_limit_per_second`; none by default).
    """

    def __init__(self, keyring: KeyRing, region: str, *, default_rate_limit: float | None = None):
        self._keyring = keyring
        self._region = region
        self._default_rate_limit = default_rate_limit
        self._buckets: dict[str, TokenBucket] = {}

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        if req.path in PUBLIC_PATHS or req.method == "OPTIONS":
            return
        header = req.get_header("Authorization")
        if not header:
            raise errors.missing_key()
        scheme, _, secret = header.partition(" ")
        if scheme.lower() != "bearer" or not secret.strip():
            raise errors.bad_key()
        key = self._keyring.authenticate(secret.strip())
        if key is None:
            raise errors.bad_key()
        if key.regions is not None and self._region not in key.regions:
            raise errors.out_of_scope(f"region {self._region!r}")
        rate = key.rate_limit or self._default_rate_limit
        if rate:
            self._check_rate(key.prefix, rate)
        req.context.key = key

    def _check_rate(self, prefix: str, rate: float) -> None:
        bucket = self._buckets.get(prefix)
        if bucket is None:
            bucket = self._buckets[prefix] = TokenBucket(rate)
        wait = bucket.take()
        if wait:
            raise errors.rate_limited(max(1, math.ceil(wait)))


def require_collection_scope(req: falcon.Request, collection: str) -> None:
    """Raise 403 out_of_scope unless the request's key may read `collection`."""
    if not may_read(req.context.key, collection):
        raise errors.out_of_scope(f"collection {collection!r}")


def may_read(key: KeyInfo, collection: str) -> bool:
    return key.collections is None or collection in key.collections
