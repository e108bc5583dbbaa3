"""API key checks: bearer secrets against hashed keys, refreshed from state every few seconds."""

from __future__ import annotations

import threading
import time

import falcon

from orchestration.store.state import KeyInfo, StateStore, secret_matches, split_secret
from serving import errors

PUBLIC_PATHS = frozenset({"/healthz", "/readyz", "/openapi.json", "/metrics"})


class KeyRing:
    """The active keys by prefix; reloaded when older than `refresh_seconds` (revocations apply then)."""

    def __init__(self, state: StateStore, *, refresh_seconds: float):
        self._state = state
        self._refresh_seconds = refresh_seconds
        self._keys: dict[str, KeyInfo] = {}
        self._loaded_at = float("-inf")
        self._lock = threading.Lock()

    def _refresh_if_stale(self) -> None:
        if time.monotonic() - self._loaded_at < self._refresh_seconds:
            return
        with self._lock:
            if time.monotonic() - self._loaded_at < self._refresh_seconds:
                return
            keys = self._state.list_keys(include_revoked=False)
            self._keys = {key.prefix: key for key in keys}
            self._loaded_at = time.monotonic()

    def authenticate(self, secret: str) -> KeyInfo | None:
        """The key a presented secret belongs to, or None. Compares hashes in constant time."""
        self._refresh_if_stale()
        prefix = split_secret(secret)
        key = self._keys.get(prefix) if prefix else None
        if key is None or not secret_matches(secret, key.secret_hash):
            return None
        return key


class AuthMiddleware:
    """Every /v1 request needs `Authorization: Bearer <key>`; the key lands in req.context.key."""

    def __init__(self, keyring: KeyRing, region: str):
        self._keyring = keyring
        self._region = region

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
        req.context.key = key


def require_collection_scope(req: falcon.Request, collection: str) -> None:
    key: KeyInfo = req.context.key
    if key.collections is not None and collection not in key.collections:
        raise errors.out_of_scope(f"collection {collection!r}")
