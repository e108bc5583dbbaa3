"""The OpenAPI 3.0 document of a region's API, built once from the project at start-up.

Collections and index names are enumerated from the configuration, and every error response lists
exactly the codes that endpoint can answer with.
"""

from __future__ import annotations

from typing import Any

import falcon
import orjson

from orchestration.config.load import Project
from serving.lineage import MAX_RUNS
from serving.records import MAX_BATCH_VALUES

AUTH_ERRORS = {
    "401": ("The API key is missing or not valid.", ["missing_api_key", "invalid_api_key"]),
    "403": ("The API key may not read this collection or call this region.", ["out_of_scope"]),
    "429": (
        "The API key's rate limit (per region) is exceeded, or this client address sent too many invalid keys "
        "this minute; see Retry-After.",
        ["rate_limited", "too_many_invalid_keys"],
    ),
}
KEYS_DOWN = "keys_unavailable"


def build_document(project: Project, region: str) -> dict[str, Any]:
    collections = list(project.collection_names)
    indices = sorted({i for c in collections for i in project.indices_of(c)})
    syncs = list(project.sync_names)
    collection = _path_param("collection", "A collection name.", _enum(collections))
    index_key = _path_param("index_key", "An index of the collection.", _enum(indices))
    lookup_headers = {
        "ETag": _header("Hash of the record's body; send it back in If-None-Match."),
        "Cache-Control": _header("max-age=<seconds>, the collection's max_age."),
        "X-Larder-Synced-At": _header("When the record was written, in epoch seconds.", {"type": "string", "pattern": "^[0-9]+$"}),
        "X-Larder-Region": _header("The region that answered.", {"type": "string", "enum": [region]}),
        "X-Larder-Source": _header(
            "Where the record came from: the cache, the durable state after a cache miss, or the state "
            "while the cache is down.",
            {"type": "string", "enum": ["cache", "state", "state-cache-down"]},
        ),
    }
    batch_headers = {k: v for k, v in lookup_headers.items() if k in {"Cache-Control", "X-Larder-Region", "X-Larder-Source"}}
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "Larder personalization API",
            "version": "1",
            "description": (
                f"Region {region!r}. Records synced from the warehouse, served from Memcached. Every 4xx/5xx "
                'answer is `{"error": {"code", "message"}}` with a stable code; unknown paths answer 404 '
                "not_found and unsupported methods 405 method_not_allowed. Cached records are served whatever "
                "the state store does; what needs the state answers 503 state_unavailable within about a second "
                "while it hangs or fails."
            ),
        },
        "servers": [{"url": "/"}],
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "description": "larder keys create"}},
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "additionalProperties": False,
                    "properties": {
                        "error": {
                            "type": "object",
                            "required": ["code", "message"],
                            "additionalProperties": False,
                            "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
                        }
                    },
                },
                "Record": {"type": "object", "description": "The record exactly as synced (fields per the sync mapping)."},
                "Run": _run_schema(),
            },
        },
        "security": [{"bearer": []}],
        "paths": {
            "/v1/collections/{collection}/records/{index_key}/{index_value}": {
                "parameters": [
                    collection,
                    index_key,
                    _path_param(
                        "index_value",
                        "The value to look up, percent-encoded (unicode, spaces and %2F are fine).",
                        {"type": "string", "minLength": 1},
                    ),
                ],
                "get": _lookup_operation("getRecord", "Look up one record.", lookup_headers, head=False),
                "head": _lookup_operation("headRecord", "The headers of a lookup, without the body.", lookup_headers, head=True),
            },
            "/v1/collections/{collection}/records/{index_key}": {
                "parameters": [collection, index_key],
                "get": _batch_operation("getRecords", batch_headers, post=False),
                "post": _batch_operation("postRecords", batch_headers, post=True),
            },
            "/v1/collections": {
                "get": {
                    "operationId": "listCollections",
                    "summary": "The collections this key may read.",
                    "responses": {
                        "200": _json("The collections.", {
                            "type": "object",
                            "required": ["collections"],
                            "properties": {"collections": {"type": "array", "items": _collection_schema()}},
                        }),
                        **_errors(auth=True),
                    },
                }
            },
            "/v1/collections/{collection}/lineage": {
                "parameters": [collection],
                "get": {
                    "operationId": "getLineage",
                    "summary": "Syncs, models, upstream dbt nodes, fields' sources, last runs and data age.",
                    "responses": {
                        "200": _json("The collection's lineage.", _lineage_schema()),
                        **_errors(auth=True, not_found=["unknown_collection"], unavailable=["state_unavailable"]),
                    },
                },
            },
            "/v1/syncs/{sync}/runs": {
                "parameters": [_path_param("sync", "A sync name.", _enum(syncs))],
                "get": {
                    "operationId": "listSyncRuns",
                    "summary": "Recent runs of a sync, newest first, with counts and rejection samples.",
                    "parameters": [{
                        "name": "limit", "in": "query", "required": False,
                        "schema": {"type": "integer", "minimum": 1, "maximum": MAX_RUNS, "default": 20},
                    }],
                    "responses": {
                        "200": _json("The runs.", {
                            "type": "object",
                            "required": ["sync", "collection", "runs"],
                            "properties": {
                                "sync": {"type": "string"},
                                "collection": {"type": "string"},
                                "runs": {"type": "array", "items": {"$ref": "#/components/schemas/Run"}},
                            },
                        }),
                        **_errors(auth=True, bad_request=["invalid_parameter"], not_found=["unknown_sync"],
                                  unavailable=["state_unavailable"]),
                    },
                },
            },
            "/healthz": {"get": _public("health", "Liveness: the process answers.", {"200": _json("Alive.", _status_schema())})},
            "/readyz": {
                "get": _public("readiness", "Readiness: the region's cache answers.", {
                    "200": _json("Ready.", _status_schema()),
                    "503": _error("The region's cache is unreachable; the message says why.", ["not_ready"]),
                })
            },
            "/openapi.json": {
                "get": _public("openapi", "This document.", {"200": _json("The OpenAPI document.", {"type": "object"})})
            },
            "/metrics": {
                "get": _public("metrics", "Prometheus metrics of every worker of this region.", {
                    "200": {"description": "Prometheus text format.", "content": {"text/plain": {"schema": {"type": "string"}}}}
                })
            },
        },
    }


class OpenApiResource:
    """/openapi.json, serialized once."""

    def __init__(self, document: dict[str, Any]):
        self._body = orjson.dumps(document)

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.data = self._body
        resp.content_type = falcon.MEDIA_JSON


def _lookup_operation(operation_id: str, summary: str, headers: dict, *, head: bool) -> dict[str, Any]:
    ok: dict[str, Any] = {"description": "The record.", "headers": headers}
    if not head:
        ok["content"] = {"application/json": {"schema": {"$ref": "#/components/schemas/Record"}}}
    return {
        "operationId": operation_id,
        "summary": summary,
        "parameters": [
            {
                "name": "If-None-Match", "in": "header", "required": False, "schema": {"type": "string"},
                "description": "An ETag from an earlier answer: 304 if the record is unchanged.",
            },
            {
                "name": "ignored", "in": "query", "required": False, "style": "form", "explode": True,
                "schema": {"type": "object", "additionalProperties": {"type": "string"}},
                "description": "Any query parameters (e.g. a cache buster a Braze template adds) are ignored.",
            },
        ],
        "responses": {
            "200": ok,
            "304": {"description": "The record is unchanged since the ETag sent in If-None-Match.", "headers": headers},
            **_errors(
                auth=True,
                not_found=["unknown_collection", "unknown_index", "record_not_found", "not_found"],
                unavailable=["state_unavailable"],
                body=not head,
            ),
        },
    }


def _batch_operation(operation_id: str, headers: dict, *, post: bool) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "operationId": operation_id,
        "summary": f"Look up to {MAX_BATCH_VALUES} values of one index with one cache round trip.",
        "responses": {
            "200": {
                "description": "Found records keyed by value, and the values with no record.",
                "headers": headers,
                "content": {"application/json": {"schema": {
                    "type": "object",
                    "required": ["records", "missing"],
                    "additionalProperties": False,
                    "properties": {
                        "records": {"type": "object", "additionalProperties": {"$ref": "#/components/schemas/Record"}},
                        "missing": {"type": "array", "items": {"type": "string"}},
                    },
                }}},
            },
            **_errors(
                auth=True,
                bad_request=["invalid_values", "invalid_parameter", "bad_request", *(["unknown_property"] if post else [])],
                not_found=["unknown_collection", "unknown_index"],
                unavailable=["state_unavailable"],
                unsupported_media=post,
            ),
        },
    }
    values = {"type": "array", "minItems": 1, "maxItems": MAX_BATCH_VALUES, "items": {"type": "string", "minLength": 1}}
    if post:
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": {
                "type": "object",
                "required": ["values"],
                "additionalProperties": False,
                "properties": {"values": {**values, "items": {"oneOf": [
                    {"type": "string", "minLength": 1},
                    {"type": "integer", "format": "int64", "minimum": -(2**63), "maximum": 2**63 - 1},
                ]}}},
            }}},
        }
    else:
        operation["parameters"] = [{
            "name": "values", "in": "query", "required": True, "style": "form", "explode": True, "schema": values,
            "description": "Repeat for each value: ?values=a&values=b.",
        }]
    return operation


def _errors(
    *,
    auth: bool = False,
    bad_request: list[str] | None = None,
    not_found: list[str] | None = None,
    unavailable: list[str] | None = None,
    unsupported_media: bool = False,
    body: bool = True,
) -> dict[str, Any]:
    responses: dict[str, Any] = {}
    if bad_request:
        responses["400"] = _error("The request is malformed; the message says how.", bad_request, body=body)
    if auth:
        for status, (description, codes) in AUTH_ERRORS.items():
            responses[status] = _error(description, codes, body=body, retry_after=status == "429")
    if not_found:
        responses["404"] = _error("Nothing by that name or value.", not_found, body=body)
    if unsupported_media:
        responses["415"] = _error("The body is not application/json.", ["unsupported_media_type"], body=body)
    responses["503"] = _error(
        "A store did not answer: state_unavailable, the durable state (read when the cache lacks a record, and "
        "for runs and lineage) did not answer within a second or is failing; keys_unavailable, this worker has "
        "not loaded the API keys yet. Retry after Retry-After.",
        [*(unavailable or []), KEYS_DOWN] if auth else (unavailable or []),
        body=body,
        retry_after=True,
    )
    return responses


def _error(description: str, codes: list[str], *, body: bool = True, retry_after: bool = False) -> dict[str, Any]:
    response: dict[str, Any] = {"description": f"{description} Codes: {', '.join(codes)}."}
    if body:
        response["content"] = {"application/json": {"schema": {
            "allOf": [
                {"$ref": "#/components/schemas/Error"},
                {"type": "object", "properties": {"error": {"type": "object", "properties": {"code": {"type": "string", "enum": codes}}}}},
            ]
        }}}
    if retry_after:
        response["headers"] = {"Retry-After": _header("Seconds to wait before retrying.", {"type": "string", "pattern": "^[0-9]+$"})}
    return response


def _public(operation_id: str, summary: str, responses: dict[str, Any]) -> dict[str, Any]:
    return {"operationId": operation_id, "summary": summary, "security": [], "responses": responses}


def _json(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _header(description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"description": description, "schema": schema or {"type": "string"}}


def _path_param(name: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "description": description, "schema": schema}


def _enum(values: list[str]) -> dict[str, Any]:
    return {"type": "string", "enum": values} if values else {"type": "string"}


def _status_schema() -> dict[str, Any]:
    return {"type": "object", "required": ["status"], "properties": {"status": {"type": "string"}, "region": {"type": "string"}}}


def _collection_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["name", "description", "max_age", "primary_index", "indices", "syncs", "lookup"],
        "properties": {
            "name": {"type": "string"},
            "description": {"type": "string"},
            "max_age": {"type": "integer"},
            "primary_index": {"type": "string", "nullable": True},
            "indices": {"type": "array", "items": {"type": "string"}},
            "syncs": {"type": "array", "items": {"type": "string"}},
            "lookup": {"type": "string"},
        },
    }


def _lineage_schema() -> dict[str, Any]:
    run = {"allOf": [{"$ref": "#/components/schemas/Run"}], "nullable": True}
    sync = {
        "type": "object",
        "required": ["name", "model", "indices", "delete", "trigger", "regions", "last_run", "last_successful_run", "data_age_seconds"],
        "properties": {
            "name": {"type": "string"},
            "description": {"type": "string"},
            "owners": {"type": "array", "items": {"type": "string"}},
            "declared_in": {"type": "object", "properties": {"kind": {"type": "string", "enum": ["file", "dbt_meta"]}, "location": {"type": "string"}}},
            "model": {
                "type": "object",
                "required": ["kind", "upstream"],
                "properties": {
                    "kind": {"type": "string", "enum": ["dbt", "sql"]},
                    "name": {"type": "string"},
                    "unique_id": {"type": "string"},
                    "relation": {"type": "string"},
                    "file": {"type": "string"},
                    "description": {"type": "string"},
                    "sql": {"type": "string"},
                    "upstream": {"type": "array", "items": {"type": "string"}, "description": "dbt unique ids, transitively"},
                },
            },
            "primary_index": {"type": "string"},
            "indices": {"type": "array", "items": {"type": "string"}},
            "delete": {"type": "string", "enum": ["keep", "clear", "delete"]},
            "trigger": {"type": "object"},
            "regions": {"type": "array", "items": {"type": "string"}},
            "last_run": run,
            "last_successful_run": run,
            "data_age_seconds": {"type": "number", "nullable": True, "description": "Seconds since the last successful run read the model."},
        },
    }
    field = {
        "type": "object",
        "required": ["field", "sync", "source", "type"],
        "properties": {
            "field": {"type": "string"},
            "sync": {"type": "string"},
            "source": {"type": "object", "properties": {"column": {"type": "string"}, "liquid": {"type": "string"}}},
            "type": {"type": "string"},
        },
    }
    summary = _collection_schema()
    return {
        "type": "object",
        "required": [*summary["required"], "fields"],
        "properties": {
            **summary["properties"],
            "syncs": {"type": "array", "items": sync},
            "fields": {"type": "array", "items": field},
        },
    }


def _run_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["id", "status", "started_at", "finished_at", "counts"],
        "properties": {
            "id": {"type": "integer"},
            "status": {"type": "string", "enum": ["running", "succeeded", "failed"]},
            "full_resync": {"type": "boolean"},
            "started_at": {"type": "number"},
            "finished_at": {"type": "number", "nullable": True},
            "duration_seconds": {"type": "number", "nullable": True},
            "regions": {"type": "array", "items": {"type": "string"}},
            "counts": {"type": "object", "additionalProperties": {"type": "integer"}},
            "rejection_samples": {"type": "array", "items": {"type": "object"}},
            "error": {"type": "string", "nullable": True},
            "origin": {"type": "string", "nullable": True},
        },
    }
