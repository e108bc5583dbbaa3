"""`create_app` builds the API for one region; `get_app()` is what gunicorn loads."""

from __future__ import annotations

import os
from typing import Any

import falcon
import orjson

from orchestration.config.load import Project
from orchestration.store.cache import RecordCache
from orchestration.store.state import StateStore
from serving import errors
from serving.auth import AuthMiddleware, InvalidKeys, KeyRing, RateLimits, TrustedProxies
from serving.health import HealthResource, ReadinessResource
from serving.lineage import CollectionsResource, LineageResource, SyncRunsResource
from serving.metrics import MetricsMiddleware, MetricsResource
from serving.openapi import OpenApiResource, build_document
from serving.records import BatchResource, CollectionIndex, RawUtf8PathMiddleware, RecordResource, RecordSource
from serving.reload import ConfigStatus, ReloadingApp, reloading_app
from serving.state_reads import StateReads, api_state_reads, api_state_store

RECORD_ROUTE = "/v1/collections/{collection}/records/{index_key}/{index_value:path}"
BATCH_ROUTE = "/v1/collections/{collection}/records/{index_key}"

def create_app(
    project: Project,
    region: str,
    *,
    state: StateStore | None = None,
    cache: RecordCache | None = None,
    keyring: KeyRing | None = None,
    reads: StateReads | None = None,
    config_status: ConfigStatus | None = None,
) -> falcon.App:
    """The API serving `region` of `project`; collaborators may be passed in (tests, reloads) or are built."""
    if region not in project.regions:
        raise ValueError(f"unknown region {region!r} (configured: {', '.join(project.regions)})")
    api = project.spec.api
    state = state or api_state_store(project.spec.state.url)
    cache = cache or RecordCache(project.regions[region].servers)
    # gunicorn builds the app in each worker (no preload), so these threads belong to the worker.
    if keyring is None:
        keyring = KeyRing(state, refresh_seconds=api.key_refresh_seconds)
        keyring.start()
    reads = reads or api_state_reads(state)

    middleware: list[Any] = [
        MetricsMiddleware(project.collection_names),
        RawUtf8PathMiddleware(),
        AuthMiddleware(
            keyring, region,
            invalid_keys=InvalidKeys(cache, api.invalid_keys_per_minute),
            proxies=TrustedProxies(api.trusted_proxies),
            limits=RateLimits(cache),
            default_rate_limit=api.rate_limit_per_second,
        ),
    ]
    app = falcon.App(middleware=middleware)
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
    app.add_route("/readyz", ReadinessResource(cache, region, config_status))
    return app


def get_app() -> ReloadingApp:
    """gunicorn's entry point: the project from $LARDER_CONFIG, the region from $LARDER_REGION,
    rebuilt by itself when the configuration changes (serving/reload.py)."""
    return reloading_app(os.environ.get("LARDER_REGION"), create_app)
