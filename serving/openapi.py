"""The OpenAPI 3.0 document of a region's API, built once from the project at start-up.

Its schemas are generated from the answer types of serving/contract.py, and every error response
lists exactly the codes that endpoint can answer with (the API's, Falcon's and the proxy's);
collections, index and sync names are enumerated from the configuration.
"""

from __future__ import annotations

import types
import typing
from enum import Enum
from typing import Any, NotRequired, Required, Union

import falcon
import orjson

from orchestration.config.load import Project
from serving import contract
from serving.contract import DEFAULT_RUNS, ERROR_STATUS, MAX_BATCH_VALUES, MAX_RUNS, RETRY_AFTER_CODES, ErrorCode
from serving.proxy import PROXY_ERRORS, ProxyLimits

E = ErrorCode
AUTH_CODES = [E.MISSING_API_KEY, E.INVALID_API_KEY, E.OUT_OF_SCOPE, E.RATE_LIMITED, E.TOO_MANY_INVALID_KEYS]
# What the proxy can answer instead of any endpoint, and instead of one that takes a body.
PROXY_CODES = [error.code for error in PROXY_ERRORS if error.answers == "any"]
PROXY_BODY_CODES = [error.code for error in PROXY_ERRORS if error.answers == "body"]

_LIMITS = ProxyLimits()
STATUS_DESCRIPTIONS = {
    400: "The request is malformed; the message says how.",
    401: "The API key is missing or not valid.",
    403: "The API key may not read this collection or call this region.",
    404: "Nothing by that name or value.",
    408: f"The proxy did not receive the body in time (a pause over {_LIMITS.body_timeout} s).",
    411: "A body was sent without Content-Length or chunked encoding.",
    413: f"The body is over {_LIMITS.max_body}.",
    414: f"The request line is over {_LIMITS.max_line}; send long batches as POST.",
    415: "The body is not application/json.",
    429: (
        "The API key's rate limit (per region) is exceeded, or this client address sent too many invalid keys "
        "this minute; see Retry-After."
    ),
    431: f"A header line is over {_LIMITS.max_line}.",
    500: "The server failed to answer this request (a bug; it is logged).",
    502: "The API workers did not answer (one died); retry after Retry-After.",
    503: (
        "A store did not answer: state_unavailable, the durable state (read when the cache lacks a record, and "
        "for runs and lineage) did not answer within a second or is failing; keys_unavailable, this worker has "
        "not loaded the API keys yet. Retry after Retry-After."
    ),
    504: f"The API workers did not answer within {_LIMITS.read_timeout} s; retry after Retry-After.",
}
RECORD_DESCRIPTION = "The record exactly as synced (fields per the sync mapping)."


def build_document(project: Project, region: str) -> dict[str, Any]:
    collections = list(project.collection_names)
    indices = sorted({i for c in collections for i in project.indices_of(c)})
    syncs = list(project.sync_names)
    collection = _path_param("collection", "A collection name.", _enum(collections))
    index_key = _path_param("index_key", "An index of the collection.", _enum(indices))
    lookup_headers = {
        "ETag": _header("Hash of the record's body; send it back in If-None-Match."),
        "Cache-Control": _header("max-age=<seconds>, the collection's max_age."),
        "X-Larder-Synced-At": _header("When the record was written, in epoch seconds.",
                                      {"type": "string", "pattern": "^[0-9]+$"}),
        "X-Larder-Region": _header("The region that answered.", {"type": "string", "enum": [region]}),
        "X-Larder-Source": _header(
            "Where the record came from: the cache, the durable state after a cache miss, or the state "
            "while the cache is down.",
            schema_of(contract.Source),
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
                f"{E.NOT_FOUND} and unsupported methods 405 {E.METHOD_NOT_ALLOWED}. Cached records are served "
                "whatever the state store does; what needs the state answers 503 state_unavailable within about "
                "a second while it hangs or fails."
            ),
        },
        "servers": [{"url": "/"}],
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "description": "larder keys create"}},
            "schemas": _components(),
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
                "head": _lookup_operation("headRecord", "The headers of a lookup, without the body.", lookup_headers,
                                          head=True),
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
                    "responses": {"200": _json("The collections.", _ref(contract.Collections)), **_errors([])},
                }
            },
            "/v1/collections/{collection}/lineage": {
                "parameters": [collection],
                "get": {
                    "operationId": "getLineage",
                    "summary": "Syncs, models, upstream dbt nodes, fields' sources, last runs and data age.",
                    "responses": {
                        "200": _json("The collection's lineage.", _ref(contract.Lineage)),
                        **_errors([E.UNKNOWN_COLLECTION, E.STATE_UNAVAILABLE]),
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
                        "schema": {"type": "integer", "minimum": 1, "maximum": MAX_RUNS, "default": DEFAULT_RUNS},
                    }],
                    "responses": {
                        "200": _json("The runs.", _ref(contract.SyncRuns)),
                        **_errors([E.INVALID_PARAMETER, E.UNKNOWN_SYNC, E.STATE_UNAVAILABLE]),
                    },
                },
            },
            "/healthz": {"get": _public("health", "Liveness: the process answers.", {
                "200": _json("Alive.", _ref(contract.Health)),
                **_errors([], auth=False),
            })},
            "/readyz": {
                "get": _public("readiness", "Readiness: the region's cache answers.", {
                    "200": _json("Ready.", _ref(contract.Readiness)),
                    **_errors([E.NOT_READY], auth=False,
                              descriptions={503: "The region's cache is unreachable; the message says why."}),
                })
            },
            "/openapi.json": {
                "get": _public("openapi", "This document.", {
                    "200": _json("The OpenAPI document.", {"type": "object"}),
                    **_errors([], auth=False),
                })
            },
            "/metrics": {
                "get": _public("metrics", "Prometheus metrics of every worker of this region.", {
                    "200": {"description": "Prometheus text format.",
                            "content": {"text/plain": {"schema": {"type": "string"}}}},
                    **_errors([], auth=False),
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


def _components() -> dict[str, Any]:
    schemas: dict[str, Any] = {model.__name__: schema_of_model(model) for model in contract.MODELS}
    schemas["ErrorCode"] = schema_of(ErrorCode)
    schemas["Record"] = {"type": "object", "description": RECORD_DESCRIPTION}
    values = schemas["BatchRequest"]["properties"]["values"]
    values.update(minItems=1, maxItems=MAX_BATCH_VALUES)
    values["items"] = {"oneOf": [
        {"type": "string", "minLength": 1},
        {"type": "integer", "format": "int64", "minimum": -(2**63), "maximum": 2**63 - 1},
    ]}
    return schemas


def schema_of_model(model: type) -> dict[str, Any]:
    """A TypedDict of serving/contract.py as a closed object schema."""
    hints = typing.get_type_hints(model, include_extras=True)
    schema: dict[str, Any] = {"type": "object"}
    required = [name for name in hints if name in model.__required_keys__]  # type: ignore[attr-defined]
    if required:
        schema["required"] = required
    schema["additionalProperties"] = False
    schema["properties"] = {name: schema_of(hint) for name, hint in hints.items()}
    if model.__doc__:
        schema["description"] = " ".join(model.__doc__.split())
    return schema


def schema_of(hint: Any) -> dict[str, Any]:
    """The schema of a field's type: builtins, enums, literals, lists, dicts, optional and contract models."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (NotRequired, Required):
        return schema_of(args[0])
    if origin is typing.Annotated:
        return {**schema_of(args[0]), "description": args[1]}
    if origin in (Union, types.UnionType):
        present = [arg for arg in args if arg is not type(None)]
        schema = schema_of(present[0]) if len(present) == 1 else {"oneOf": [schema_of(arg) for arg in present]}
        if len(present) < len(args):
            schema = {"allOf": [schema], "nullable": True} if "$ref" in schema else {**schema, "nullable": True}
        return schema
    if origin is typing.Literal:
        return {"type": "string", "enum": list(args)}
    if origin is list:
        return {"type": "array", "items": schema_of(args[0])}
    if origin is dict:
        return {"type": "object"} if args[1] is Any else {"type": "object", "additionalProperties": schema_of(args[1])}
    if hint is Any:
        return {}
    if hint is contract.RecordBody:
        return {"$ref": "#/components/schemas/Record"}
    if hint in contract.MODELS:
        return _ref(hint)
    if isinstance(hint, type) and issubclass(hint, Enum):
        return {"type": "string", "enum": [member.value for member in hint]}
    return {str: {"type": "string"}, bool: {"type": "boolean"}, int: {"type": "integer"},
            float: {"type": "number"}}[hint]


def _ref(model: type) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


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
                [E.UNKNOWN_COLLECTION, E.UNKNOWN_INDEX, E.RECORD_NOT_FOUND, E.NOT_FOUND, E.STATE_UNAVAILABLE],
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
                "content": {"application/json": {"schema": _ref(contract.BatchAnswer)}},
            },
            **_errors(
                [E.INVALID_VALUES, E.INVALID_PARAMETER, E.BAD_REQUEST, *([E.UNKNOWN_PROPERTY] if post else []),
                 E.UNKNOWN_COLLECTION, E.UNKNOWN_INDEX, *([E.UNSUPPORTED_MEDIA_TYPE] if post else []),
                 E.STATE_UNAVAILABLE],
                body_codes=post,
            ),
        },
    }
    if post:
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": _ref(contract.BatchRequest)}},
        }
    else:
        operation["parameters"] = [{
            "name": "values", "in": "query", "required": True, "style": "form", "explode": True,
            "schema": {"type": "array", "minItems": 1, "maxItems": MAX_BATCH_VALUES,
                       "items": {"type": "string", "minLength": 1}},
            "description": "Repeat for each value: ?values=a&values=b.",
        }]
    return operation


def _errors(codes: list[ErrorCode], *, auth: bool = True, body: bool = True, body_codes: bool = False,
            descriptions: dict[int, str] | None = None) -> dict[str, Any]:
    """The error responses, by status, of an operation answering `codes`, the key checks' codes (`auth`)
    and the proxy's (with those of a request with a body when `body_codes`)."""
    every = [*codes, *(AUTH_CODES + [E.KEYS_UNAVAILABLE] if auth else []), *PROXY_CODES,
             *(PROXY_BODY_CODES if body_codes else [])]
    by_status: dict[int, list[ErrorCode]] = {}
    for code in every:
        listed = by_status.setdefault(ERROR_STATUS[code], [])
        if code not in listed:
            listed.append(code)
    described = {**STATUS_DESCRIPTIONS, **(descriptions or {})}
    return {str(status): _error(described[status], by_status[status], body=body) for status in sorted(by_status)}


def _error(description: str, codes: list[ErrorCode], *, body: bool = True) -> dict[str, Any]:
    response: dict[str, Any] = {"description": f"{description} Codes: {', '.join(codes)}."}
    if body:
        response["content"] = {"application/json": {"schema": {
            "allOf": [
                _ref(contract.Error),
                {"type": "object", "properties": {"error": {"type": "object", "properties": {
                    "code": {"type": "string", "enum": [code.value for code in codes]}}}}},
            ]
        }}}
    if any(code in RETRY_AFTER_CODES for code in codes):
        response["headers"] = {"Retry-After": _header("Seconds to wait before retrying.",
                                                      {"type": "string", "pattern": "^[0-9]+$"})}
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
