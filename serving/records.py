"""Record lookups: one cache read on the hot path; the durable state answers a miss."""

from __future__ import annotations

import logging

import falcon

from orchestration.config.load import Project
from orchestration.store import envelope
from orchestration.store.cache import CacheUnavailable, RecordCache
from orchestration.store.keys import record_key
from orchestration.store.state import StateStore
from serving import errors
from serving.auth import require_collection_scope

log = logging.getLogger("larder.api")


class RecordSource:
    """Finds a record's packed value: the region's cache, else the state (putting it back)."""

    def __init__(self, project: Project, cache: RecordCache, state: StateStore, *, fallback_ttl: int):
        self._cache = cache
        self._state = state
        self._fallback_ttl = fallback_ttl
        self._order = {c: tuple(s.name for s in project.syncs_for(c)) for c in project.collection_names}

    def get(self, collection: str, key: str) -> tuple[bytes | None, str]:
        """(packed value or None, where it came from: cache · state · state-cache-down)."""
        try:
            value = self._cache.get(key)
        except CacheUnavailable as error:
            log.warning("cache unavailable, answering from state: %s", error)
            return self._from_state(collection, key, cache_up=False), "state-cache-down"
        if value is not None:
            return value, "cache"
        return self._from_state(collection, key, cache_up=True), "state"

    def _from_state(self, collection: str, key: str, *, cache_up: bool) -> bytes | None:
        try:
            found = self._state.record_by_key(key, self._order.get(collection, ()))
        except Exception as error:  # the state store is down too: that is a 503, never a 404
            log.error("state store unavailable: %s", error)
            raise errors.cache_unavailable("the record cache and the state store are both unavailable") from error
        if found is None:
            return None
        packed, keys = found
        if cache_up:
            try:
                for k in keys:
                    self._cache.add(k, packed, expire=self._fallback_ttl)
            except CacheUnavailable:
                pass  # serving the record matters more than putting it back
        return packed


class RecordResource:
    """GET/HEAD /v1/collections/{collection}/records/{index_key}/{index_value}"""

    def __init__(self, project: Project, source: RecordSource, region: str):
        self._source = source
        self._region = region
        self._indices = {c: project.indices_of(c) for c in project.collection_names}
        self._cache_control = {c: f"max-age={project.collection(c).max_age}" for c in project.collection_names}

    def on_get(self, req: falcon.Request, resp: falcon.Response, collection: str, index_key: str, index_value: str) -> None:
        indices = self._indices.get(collection)
        if indices is None:
            raise errors.unknown_collection(collection)
        if index_key not in indices:
            raise errors.unknown_index(collection, index_key, indices)
        require_collection_scope(req, collection)
        value, source = self._source.get(collection, record_key(collection, index_key, index_value))
        if value is None:
            raise errors.record_not_found(collection, index_key)
        record = envelope.unpack(value)
        resp.data = record.body
        resp.content_type = falcon.MEDIA_JSON
        resp.etag = record.etag
        resp.cache_control = (self._cache_control[collection],)
        resp.set_header("X-Larder-Synced-At", str(record.synced_at))
        resp.set_header("X-Larder-Region", self._region)
        resp.set_header("X-Larder-Source", source)

    on_head = on_get
