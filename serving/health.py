"""Liveness and readiness."""

from __future__ import annotations

from typing import TYPE_CHECKING

import falcon

from orchestration.store.cache import CacheUnavailable, RecordCache
from serving import errors
from serving.contract import Health, Readiness

if TYPE_CHECKING:
    from serving.reload import ConfigStatus


class HealthResource:
    """/healthz: the process answers."""

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        answer: Health = {"status": "ok"}
        resp.media = answer


class ReadinessResource:
    """/readyz: the region's cache answers; 503 with the reason while it does not.

    With a configuration status (the served API reloads its configuration), the answer also says
    which configuration is in use and, when a newer one on disk does not load, why (`"config":
    {"status": "stale", "error": ...}`): the API stays ready on its last good configuration.
    """

    def __init__(self, cache: RecordCache, region: str, config_status: ConfigStatus | None = None):
        self._cache = cache
        self._region = region
        self._config_status = config_status

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        try:
            self._cache.ping()
        except CacheUnavailable as error:
            raise errors.not_ready(f"region {self._region!r}: {error}") from error
        answer: Readiness = {"status": "ready", "region": self._region}
        if self._config_status is not None:
            answer["config"] = self._config_status.detail()
        resp.media = answer
