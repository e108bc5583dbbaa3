"""`create_app` builds the API for one region; `get_app()` is what gunicorn loads."""

from __future__ import annotations

import os

import falcon
import orjson

from orchestration.config.load import Project, load_project
from orchestration.store.cache import RecordCache
from orchestration.store.state import StateStore, make_engine
from serving import errors
from serving.auth import AuthMiddleware, InvalidKeys, KeyRing, RateLimits, TrustedProxies
from serving.health import HealthResource, ReadinessResource
from serving.lineage import CollectionsResource, LineageResource, SyncRunsResource
from serving.metrics import MetricsMiddleware, MetricsResource
from serving.openapi import OpenApiResource, build_document
from serving.records import BatchResource, CollectionIndex, RawUtf8PathMiddleware, RecordResource, RecordSource
from serving.state_reads import StateReads

RECORD_ROUTE = "/v1/collections/{collection}/records/{index_key}/{index_value:path}"
BATCH_ROUTE = "/v1/collections/{collection}/records/{index_key}"

# Bounds on the API's use of the state store (a sync's are longer: orchestration/store/state.py).
# A request waits at most STATE_DEADLINE_SECONDS for a state read, then answers 503
# state_unavailable with Retry-After: STATE_RETRY_AFTER_SECONDS.
STATE_DEADLINE_SECONDS = 1.0
STATE_RETRY_AFTER_SECONDS = 1
STATE_STATEMENT_TIMEOUT_SECONDS = 1.0  # on the server (Postgres statement_timeout; SQLite busy timeout)
STATE_CONNECT_TIMEOUT_SECONDS = 2.0  # libpq's least
STATE_IO_TIMEOUT_SECONDS = 2.0  # the client gives up on a connection whose server stopped answering


def api_state_store(url: str) -> StateStore:
    """The state store as the API reads it: every connection and statement bounded."""
    engine = make_engine(url, connect_timeout=STATE_CONNECT_TIMEOUT_SECONDS,
                         statement_timeout=STATE_STATEMENT_TIMEOUT_SECONDS, io_timeout=STATE_IO_TIMEOUT_SECONDS)
    return StateStore(url, engine=engine)


def create_app(project: Project, region: str, *, state: StateStore | None = None, cache: RecordCache | None = None) -> falcon.App:
    """The API serving `region` of `project`; collaborators may be passed in (tests) or are built."""
    if region not in project.regions:
        raise ValueError(f"unknown region {region!r} (configured: {', '.join(project.regions)})")
    api = project.spec.api
    state = state or api_state_store(project.spec.state.url)
    cache = cache or RecordCache(project.regions[region].servers)
    # gunicorn builds the app in each worker (no preload), so these threads belong to the worker.
    keyring = KeyRing(state, refresh_seconds=api.key_refresh_seconds)
    keyring.start()
    reads = StateReads(state, deadline=STATE_DEADLINE_SECONDS, retry_after=STATE_RETRY_AFTER_SECONDS)

    app = falcon.App(middleware=[
        MetricsMiddleware(project.collection_names),
        RawUtf8PathMiddleware(),
        AuthMiddleware(
            keyring, region,
            invalid_keys=InvalidKeys(cache, api.invalid_keys_per_minute),
            proxies=TrustedProxies(api.trusted_proxies),
            limits=RateLimits(cache),
            default_rate_limit=api.rate_limit_per_second,
        ),
    ])
    json_handler = falcon.media.JSONHandler(dumps=orjson.dumps, loads=orjson.loads)
    # Request bodies are JSON only (a form body is 415, as the OpenAPI document says).
    app.req_options.media_handlers = falcon.media.Handlers({falcon.MEDIA_JSON: json_handler})
    app.resp_options.media_handlers[falcon.MEDIA_JSON] = json_handler
    app.set_error_serializer(errors.serialize_error)
    app.add_error_handler(Exception, errors.handle_unexpected)

    source = RecordSource(project, cache, state, reads, fallback_ttl=api.fallback_ttl_seconds)
    collections = CollectionIndex(project)
    app.add_route(RECORD_ROUTE, RecordResource(collections, source, region))
    app.add_route(BATCH_ROUTE, BatchResource(collections, source, region))
    app.add_route("/v1/collections", CollectionsResource(project))
    app.add_route("/v1/collections/{collection}/lineage", LineageResource(project, state, reads))
    app.add_route("/v1/syncs/{sync}/runs", SyncRunsResource(project, state, reads))
    app.add_route("/openapi.json", OpenApiResource(build_document(project, region)))
    app.add_route("/metrics", MetricsResource())
    app.add_route("/healthz", HealthResource())
    app.add_route("/readyz", ReadinessResource(cache, region))
    return app


def get_app() -> falcon.App:
    """gunicorn's entry point: the project from $LARDER_CONFIG, the region from $LARDER_REGION."""
    project = load_project()
    region = os.environ.get("LARDER_REGION") or project.enabled_regions[0]
    return create_app(project, region)
