"""API errors: every 4xx/5xx is `{"error": {"code", "message"}}` with a stable code."""

from __future__ import annotations

import logging

import falcon
import orjson

log = logging.getLogger("larder.api")


class ApiError(falcon.HTTPError):
    """An error with a stable machine-readable code."""

    def __init__(self, status: str, code: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(status, title=code, description=message, headers=headers)
        self.code = code
        self.message = message


def unknown_collection(name: str) -> ApiError:
    return ApiError(falcon.HTTP_404, "unknown_collection", f"collection {name!r} does not exist")


def unknown_index(collection: str, index: str, known: tuple[str, ...]) -> ApiError:
    return ApiError(
        falcon.HTTP_404,
        "unknown_index",
        f"collection {collection!r} has no index {index!r} (indices: {', '.join(known)})",
    )


def record_not_found(collection: str, index: str) -> ApiError:
    return ApiError(falcon.HTTP_404, "record_not_found", f"no record in {collection!r} with that {index}")


def missing_key() -> ApiError:
    return ApiError(
        falcon.HTTP_401,
        "missing_api_key",
        "send an API key as 'Authorization: Bearer <key>'",
        headers={"WWW-Authenticate": 'Bearer realm="larder"'},
    )


def bad_key() -> ApiError:
    return ApiError(
        falcon.HTTP_401,
        "invalid_api_key",
        "the API key is not valid (unknown, malformed or revoked)",
        headers={"WWW-Authenticate": 'Bearer realm="larder", error="invalid_token"'},
    )


def out_of_scope(what: str) -> ApiError:
    return ApiError(falcon.HTTP_403, "out_of_scope", f"this API key may not read {what}")


def cache_unavailable(message: str) -> ApiError:
    return ApiError(falcon.HTTP_503, "cache_unavailable", message, headers={"Retry-After": "1"})


def keys_unavailable() -> ApiError:
    return ApiError(
        falcon.HTTP_503, "keys_unavailable", "API keys cannot be checked: the state store is unreachable",
        headers={"Retry-After": "1"},
    )


def state_unavailable(message: str) -> ApiError:
    return ApiError(falcon.HTTP_503, "state_unavailable", message, headers={"Retry-After": "1"})


def rate_limited(retry_after: int) -> ApiError:
    return ApiError(
        falcon.HTTP_429, "rate_limited", f"this API key's rate limit is exceeded; retry in {retry_after}s",
        headers={"Retry-After": str(retry_after)},
    )


def unknown_sync(name: str) -> ApiError:
    return ApiError(falcon.HTTP_404, "unknown_sync", f"sync {name!r} does not exist")


def invalid_values(message: str) -> ApiError:
    return ApiError(falcon.HTTP_400, "invalid_values", message)


def invalid_parameter(message: str) -> ApiError:
    return ApiError(falcon.HTTP_400, "invalid_parameter", message)


# Falcon's own errors (unknown route, bad method, ...) get codes from their status.
_STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    411: "length_required",
    413: "payload_too_large",
    414: "uri_too_long",
    415: "unsupported_media_type",
    429: "rate_limited",
    431: "headers_too_large",
    500: "internal_error",
    503: "unavailable",
}


def serialize_error(req: falcon.Request, resp: falcon.Response, error: falcon.HTTPError) -> None:
    code = getattr(error, "code", None)
    if not isinstance(code, str):
        code = _STATUS_CODES.get(error.status_code, "error")
    message = getattr(error, "message", None) or error.description or _default_message(req, error.status_code, code)
    resp.data = orjson.dumps({"error": {"code": code, "message": message}})
    resp.content_type = falcon.MEDIA_JSON
    resp.append_header("Vary", "Accept")


def _default_message(req: falcon.Request, status: int, code: str) -> str:
    if status == 404:
        return f"no endpoint at {req.path!r}; see /openapi.json"
    if status == 405:
        return f"{req.method} is not allowed on {req.path!r}; see /openapi.json"
    return code.replace("_", " ")


def handle_unexpected(req: falcon.Request, resp: falcon.Response, error: Exception, params) -> None:
    """Anything not raised as an HTTPError is a 500 with the same JSON shape (and no internals)."""
    log.exception("unhandled error on %s %s", req.method, req.path, exc_info=error)
    resp.status = falcon.HTTP_500
    serialize_error(req, resp, ApiError(falcon.HTTP_500, "internal_error", "the server failed to answer this request"))
