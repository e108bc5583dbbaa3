"""Record lookups: one cache read on the hot path; the durable state answers a miss.

A record is answered from the region's Memcached when it is there. Otherwise the durable state
of the last sync decides: the record is put back in the cache and served, or it does not exist
(404). With the cache down the state answers (`X-Larder-Source: state-cache-down`); with the
state down too the answer is 503, never a false 404.
"""

from __future__ import annotations

import logging
from typing import Sequence

import falcon
import orjson

from orchestration.config.load import Project
from orchestration.store import envelope
from orchestration.store.cache import CacheUnavailable, RecordCache
from orchestration.store.keys import index_text, record_key
from orchestration.store.state import StateStore
from serving import errors
from serving.auth import require_collection_scope
from serving.fallback import state_read_slot
from serving.metrics import TALLY

log = logging.getLogger("larder.api")

MAX_BATCH_VALUES = 100

SOURCE_CACHE = "cache"
SOURCE_STATE = "state"
SOURCE_STATE_CACHE_DOWN = "state-cache-down"


class RecordSource:
    """Finds records' packed values: the region's cache, else the state (putting them back)."""

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
            TALLY.cache_down(collection)
            return self._from_state(collection, [key], cache_up=False).get(key), SOURCE_STATE_CACHE_DOWN
        if value is not None:
            TALLY.cache_hits(collection)
            return value, SOURCE_CACHE
        TALLY.cache_misses(collection)
        return self._from_state(collection, [key], cache_up=True).get(key), SOURCE_STATE

    def get_many(self, collection: str, keys: Sequence[str]) -> tuple[dict[str, bytes], str]:
        """Packed values of those keys that exist (one multi-get; misses in one state query)."""
        try:
            found = self._cache.get_many(keys)
        except CacheUnavailable as error:
            log.warning("cache unavailable, answering a batch from state: %s", error)
            TALLY.cache_down(collection, len(keys))
            return self._from_state(collection, keys, cache_up=False), SOURCE_STATE_CACHE_DOWN
        TALLY.cache_hits(collection, len(found))
        missed = [key for key in keys if key not in found]
        if not missed:
            return found, SOURCE_CACHE
        TALLY.cache_misses(collection, len(missed))
        found.update(self._from_state(collection, missed, cache_up=True))
        return found, SOURCE_STATE

    def _from_state(self, collection: str, keys: Sequence[str], *, cache_up: bool) -> dict[str, bytes]:
        try:
            with state_read_slot():  # at most all workers but one wait on the state store
                found = self._state.records_by_keys(keys, self._order.get(collection, ()))
        except errors.ApiError:
            raise
        except Exception as error:  # the state store is down too: that is a 503, never a 404
            log.error("state store unavailable: %s", error)
            raise errors.cache_unavailable("the record cache and the state store are both unavailable") from error
        if cache_up:
            self._put_back(found.values())
        return {key: packed for key, (packed, _) in found.items()}

    def _put_back(self, records) -> None:
        # `add`, not `set`: a sync that wrote the key meanwhile wins over this older read.
        try:
            for packed, all_keys in records:
                for key in all_keys:
                    self._cache.add(key, packed, expire=self._fallback_ttl)
        except CacheUnavailable as error:
            log.warning("could not put a record back in the cache: %s", error)  # serving it matters more


class CollectionIndex:
    """What the lookup resources know of each collection, computed once at start-up."""

    def __init__(self, project: Project):
        self._indices = {c: project.indices_of(c) for c in project.collection_names}
        self.cache_control = {c: (f"max-age={project.collection(c).max_age}",) for c in project.collection_names}

    def check(self, req: falcon.Request, collection: str, index_key: str) -> None:
        """404 unknown collection, 403 out of the key's scope, 404 unknown index, in that order."""
        indices = self._indices.get(collection)
        if indices is None:
            raise errors.unknown_collection(collection)
        require_collection_scope(req, collection)
        if index_key not in indices:
            raise errors.unknown_index(collection, index_key, indices)


class RecordResource:
    """GET/HEAD /v1/collections/{collection}/records/{index_key}/{index_value}"""

    def __init__(self, collections: CollectionIndex, source: RecordSource, region: str):
        self._collections = collections
        self._source = source
        self._region = region

    def on_get(self, req: falcon.Request, resp: falcon.Response, collection: str, index_key: str, index_value: str) -> None:
        self._collections.check(req, collection, index_key)
        value, source = self._source.get(collection, record_key(collection, index_key, index_value))
        if value is None:
            raise errors.record_not_found(collection, index_key)
        record = envelope.unpack(value)
        resp.etag = record.etag
        resp.cache_control = self._collections.cache_control[collection]
        resp.set_header("X-Larder-Synced-At", str(record.synced_at))
        resp.set_header("X-Larder-Region", self._region)
        resp.set_header("X-Larder-Source", source)
        if_none_match = req.get_header("If-None-Match")
        if if_none_match and _etag_matches(if_none_match, record.etag):
            resp.status = falcon.HTTP_304
            return
        resp.data = record.body
        resp.content_type = falcon.MEDIA_JSON

    on_head = on_get


class BatchResource:
    """GET /v1/collections/{c}/records/{index_key}?values=a&values=b, or POST {"values": [...]}.

    Up to 100 values of one index, answered with one multi-get:
    `{"records": {value: record, ...}, "missing": [value, ...]}`. Records' bytes are spliced into
    the answer as they were synced, never decoded.
    """

    def __init__(self, collections: CollectionIndex, source: RecordSource, region: str):
        self._collections = collections
        self._source = source
        self._region = region

    def on_get(self, req: falcon.Request, resp: falcon.Response, collection: str, index_key: str) -> None:
        self._collections.check(req, collection, index_key)
        reject_unknown_parameters(req, {"values"})
        self._answer(resp, collection, index_key, req.get_param_as_list("values") or [])

    def on_post(self, req: falcon.Request, resp: falcon.Response, collection: str, index_key: str) -> None:
        self._collections.check(req, collection, index_key)
        reject_unknown_parameters(req, set())
        body = req.get_media()
        values = body.get("values") if isinstance(body, dict) else None
        if not isinstance(values, list):
            raise errors.invalid_values('send a JSON object {"values": [...]} with up to 100 strings or integers')
        texts = []
        for value in values:
            text = index_text(value) if isinstance(value, str | int) and not isinstance(value, bool) else None
            if text is None:
                raise errors.invalid_values(f"{value!r} is not an index value (non-empty string or integer)")
            texts.append(text)
        self._answer(resp, collection, index_key, texts)

    def _answer(self, resp: falcon.Response, collection: str, index_key: str, values: list[str]) -> None:
        if not values:
            raise errors.invalid_values("name at least one value: ?values=a&values=b")
        if len(values) > MAX_BATCH_VALUES:
            raise errors.invalid_values(f"{len(values)} values given; a batch takes at most {MAX_BATCH_VALUES}")
        if "" in values:
            raise errors.invalid_values("an index value cannot be empty")
        values = list(dict.fromkeys(values))  # a value asked twice is answered once
        keys = {value: record_key(collection, index_key, value) for value in values}
        found, source = self._source.get_many(collection, list(keys.values()))
        records, missing = {}, []
        for value, key in keys.items():
            packed = found.get(key)
            if packed is None:
                missing.append(value)
            else:
                records[value] = orjson.Fragment(envelope.unpack(packed).body)  # spliced in as synced
        resp.data = orjson.dumps({"records": records, "missing": missing})
        resp.content_type = falcon.MEDIA_JSON
        resp.cache_control = self._collections.cache_control[collection]
        resp.set_header("X-Larder-Region", self._region)
        resp.set_header("X-Larder-Source", source)


def reject_unknown_parameters(req: falcon.Request, known: set[str]) -> None:
    """400 invalid_parameter for a query parameter the endpoint does not take (a typo, usually)."""
    unknown = sorted(set(req.params) - known)
    if unknown:
        raise errors.invalid_parameter(
            f"unknown query parameter(s) {', '.join(map(repr, unknown))}; this endpoint takes "
            + (", ".join(sorted(known)) or "none")
        )


def _etag_matches(if_none_match: str, etag: str) -> bool:
    for candidate in if_none_match.split(","):
        candidate = candidate.strip().removeprefix("W/").strip('"')
        if candidate == etag or candidate == "*":
            return True
    return False
