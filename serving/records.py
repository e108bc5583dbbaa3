"""Record lookups: one cache read on the hot path; the durable state answers a miss.

A record is answered from the region's Memcached when it is there. Otherwise the durable state
of the last sync decides: the record is put back in the cache and served, or it does not exist
(404). With the cache down the state answers (`X-Larder-Source: state-cache-down`); with the
state unable to answer the answer is 503 state_unavailable, never a false 404.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from urllib.parse import unquote_to_bytes

import falcon
import orjson

from orchestration.config.load import Project
from orchestration.store import envelope
from orchestration.store.cache import CacheUnavailable, RecordCache
from orchestration.store.keys import index_text, record_key
from orchestration.store.state import StateStore
from serving import errors
from serving.auth import require_collection_scope
from serving.contract import BATCH_BODY_PROPERTIES, MAX_BATCH_VALUES, BatchAnswer, RecordBody, Source
from serving.errors import ThrottledLog, describe_error
from serving.fallback import state_read_slot
from serving.metrics import TALLY
from serving.state_reads import STORE_ERRORS, StateReads, StateUnavailable

log = logging.getLogger("larder.api")
THROTTLED = ThrottledLog(log)


class RecordSource:
    """Finds records' packed values: the region's cache, else the state (putting them back)."""

    def __init__(self, project: Project, cache: RecordCache, state: StateStore, reads: StateReads, *,
                 fallback_ttl: int):
        self._cache = cache
        self._state = state
        self._reads = reads
        self._fallback_ttl = fallback_ttl
        # pymemcache clients are not thread-safe: the background rechecks get connections of their own.
        self._recheck_cache = RecordCache(cache.servers)
        self._recheck_lock = threading.Lock()
        self._order = {c: tuple(s.name for s in project.syncs_for(c)) for c in project.collection_names}

    def get(self, collection: str, key: str) -> tuple[bytes | None, Source]:
        """(packed value or None, where it came from: cache · state · state-cache-down)."""
        try:
            value = self._cache.get(key)
        except CacheUnavailable as error:
            THROTTLED.warning("cache", "cache unavailable, answering from state: %s", describe_error(error))
            TALLY.cache_down(collection)
            return self._from_state(collection, [key], cache_up=False).get(key), Source.STATE_CACHE_DOWN
        if value is not None:
            TALLY.cache_hits(collection)
            return value, Source.CACHE
        TALLY.cache_misses(collection)
        return self._from_state(collection, [key], cache_up=True).get(key), Source.STATE

    def get_many(self, collection: str, keys: Sequence[str]) -> tuple[dict[str, bytes], Source]:
        """Packed values of those keys that exist (one multi-get; misses in one state query)."""
        try:
            found = self._cache.get_many(keys)
        except CacheUnavailable as error:
            THROTTLED.warning("cache", "cache unavailable, answering from state: %s", describe_error(error))
            TALLY.cache_down(collection, len(keys))
            return self._from_state(collection, keys, cache_up=False), Source.STATE_CACHE_DOWN
        TALLY.cache_hits(collection, len(found))
        missed = [key for key in keys if key not in found]
        if not missed:
            return found, Source.CACHE
        TALLY.cache_misses(collection, len(missed))
        found.update(self._from_state(collection, missed, cache_up=True))
        return found, Source.STATE

    def _from_state(self, collection: str, keys: Sequence[str], *, cache_up: bool) -> dict[str, bytes]:
        order = self._order.get(collection, ())
        try:
            with state_read_slot():  # at most all workers but one of this host wait on the state store
                found = self._reads(lambda: self._state.records_by_keys(keys, order))
        except StateUnavailable as error:  # a 503, never a 404: the state alone knows what does not exist
            raise errors.state_unavailable(
                f"{error}; the record {'is not in the cache' if cache_up else 'cache is unreachable too'}"
            ) from error
        if cache_up and found:
            self._put_back(found.values(), order)
        return {key: packed for key, (packed, _) in found.items()}

    def _put_back(self, records, order: Sequence[str]) -> None:
        # `add`, not `set`: a sync that wrote the key meanwhile wins over this older read.
        added: dict[str, bytes] = {}
        by_keys = {tuple(keys): packed for packed, keys in records}  # a record asked by two keys is put back once
        try:
            for keys, packed in by_keys.items():
                for key in keys:
                    if self._cache.add(key, packed, expire=self._fallback_ttl):
                        added[key] = packed
        except CacheUnavailable as error:  # serving the record matters more
            THROTTLED.warning("put_back", "could not put a record back in the cache: %s", describe_error(error))
        if added:
            self._take_back_what_changed(added, order)

    def _take_back_what_changed(self, added: dict[str, bytes], order: Sequence[str]) -> None:
        """Delete the records just put back that the state no longer holds as they were read.

        A sync may delete (or re-index) a record after this lookup read it and clear it from the
        cache before the `add` above: the add then puts the old record back, to be served until
        the fallback TTL. Syncs commit the state before they touch the cache, so a read of the
        state after the add sees any such change; what it shows changed or gone is deleted. The
        read runs in the background (the answer does not wait for it); when it cannot run, what
        was put back is deleted at once.
        """
        if not self._reads.in_background(lambda: self._recheck(added, order)):
            self._delete_put_back(self._cache, list(added))

    def _recheck(self, added: dict[str, bytes], order: Sequence[str]) -> None:
        """On a thread of the StateReads pool. Unless the state says which changed, all are deleted: the
        next lookup reads the state again."""
        stale = list(added)
        try:
            now = self._state.records_by_keys(list(added), order)
            stale = [key for key, packed in added.items() if key not in now or now[key].packed != packed]
        except STORE_ERRORS as error:
            THROTTLED.warning("recheck", "could not read back records put in the cache: %s", describe_error(error))
        finally:
            if stale:
                with self._recheck_lock:
                    self._delete_put_back(self._recheck_cache, stale)

    def _delete_put_back(self, cache: RecordCache, keys: list[str]) -> None:
        try:
            cache.delete_many(keys)
        except CacheUnavailable as error:
            THROTTLED.warning("take_back", "could not delete a record put back in the cache: %s", describe_error(error))


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
        resp.set_header("X-Larder-Source", source.value)
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
        if isinstance(body, dict) and body.keys() - set(BATCH_BODY_PROPERTIES):
            raise errors.unknown_property(sorted(body.keys() - set(BATCH_BODY_PROPERTIES)), list(BATCH_BODY_PROPERTIES))
        values = body.get("values") if isinstance(body, dict) else None
        if not isinstance(values, list):
            raise errors.invalid_values(
                f'send a JSON object {{"values": [...]}} with up to {MAX_BATCH_VALUES} strings or integers')
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
        answer: BatchAnswer = {"records": {}, "missing": []}
        for value, key in keys.items():
            packed = found.get(key)
            if packed is None:
                answer["missing"].append(value)
            else:
                answer["records"][value] = RecordBody(envelope.unpack(packed).body)  # spliced in as synced
        resp.data = orjson.dumps(answer)
        resp.content_type = falcon.MEDIA_JSON
        resp.cache_control = self._collections.cache_control[collection]
        resp.set_header("X-Larder-Region", self._region)
        resp.set_header("X-Larder-Source", source.value)


class RawUtf8PathMiddleware:
    """Reads a path sent with raw (unencoded) UTF-8 as the same path percent-encoded.

    Clients should percent-encode (`/email/zo%C3%AB`), but some send the UTF-8 bytes as they are.
    gunicorn decodes those bytes as latin-1 and tunnels the result through latin-1 once more, so
    Falcon sees `ü` sent raw as `Ã¼`. The raw request URI (gunicorn's RAW_URI) tells the two
    apart: only when it holds non-ASCII bytes is the path rebuilt from it. An ASCII path, every
    compliant request, costs one `isascii()`.
    """

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        if req.path.isascii():
            return
        raw = req.env.get("RAW_URI")
        if raw is None or raw.isascii():
            return
        path = _path_of_raw_uri(raw)
        if path is not None:
            req.path = path


def _path_of_raw_uri(raw: str) -> str | None:
    """The path of a request URI as gunicorn received it (bytes as latin-1), or None if not UTF-8."""
    try:
        target = raw.encode("latin-1")
    except UnicodeEncodeError:
        return None
    path = target.split(b"?", 1)[0].split(b"#", 1)[0]
    if not path.startswith(b"/"):  # absolute form: http://host/path
        path = b"/" + path.split(b"://", 1)[-1].partition(b"/")[2]
    try:
        return unquote_to_bytes(path).decode("utf-8")
    except UnicodeDecodeError:
        return None


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
