"""Liveness and readiness."""

from __future__ import annotations

import falcon

from orchestration.store.cache import CacheUnavailable, RecordCache
from serving import errors


class HealthResource:
    """/healthz: the process answers."""

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = {"status": "ok"}


class ReadinessResource:
    """/readyz: the region's cache answers; 503 with the reason while it does not."""

    def __init__(self, cache: RecordCache, region: str):
        self._cache = cache
        self._region = region

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        try:
            self._cache.ping()
        except CacheUnavailable as error:
            raise errors.ApiError(falcon.HTTP_503, "not_ready", f"region {self._region!r}: {error}") from error
        resp.media = {"status": "ready", "region": self._region}
