"""The baseline: a bare Falcon app doing one pymemcache get per request, nothing else.

It answers the record's JSON body (the cached value minus Larder's envelope header).

It answers Larder's URL shapes so the load generator sends byte-for-byte the same requests;
the difference between the two is what Larder adds (auth, checks, headers, envelope, metrics).
gunicorn loads it as `bench.bare_app:get_app()` with $BENCH_MEMCACHED set to host:port.
"""

from __future__ import annotations

import os

import falcon
from pymemcache.client.base import Client

from orchestration.store.envelope import HEADER_LEN
from orchestration.store.keys import record_key


class BareLookup:
    def __init__(self, client: Client):
        self._client = client

    def on_get(self, req, resp, collection: str, index_key: str, index_value: str) -> None:
        value = self._client.get(record_key(collection, index_key, index_value))
        if value is None:
            raise falcon.HTTPNotFound()
        resp.data = value[HEADER_LEN:]  # the record's JSON body, as Larder sends it
        resp.content_type = falcon.MEDIA_JSON


class BareBatch:
    def __init__(self, client: Client):
        self._client = client

    def on_get(self, req, resp, collection: str, index_key: str) -> None:
        keys = [record_key(collection, index_key, value) for value in req.get_param_as_list("values") or ()]
        resp.data = b"\n".join(value[HEADER_LEN:] for value in self._client.get_many(keys).values())
        resp.content_type = falcon.MEDIA_JSON


def get_app() -> falcon.App:
    host, _, port = os.environ["BENCH_MEMCACHED"].rpartition(":")
    client = Client((host, int(port)), timeout=1.0, connect_timeout=1.0, no_delay=True, default_noreply=False)
    app = falcon.App()
    app.add_route("/v1/collections/{collection}/records/{index_key}/{index_value}", BareLookup(client))
    app.add_route("/v1/collections/{collection}/records/{index_key}", BareBatch(client))
    return app
