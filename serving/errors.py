"""API errors: every 4xx/5xx is `{"error": {"code", "message"}}` with a stable code.

Also how the API logs the failures of its stores: by class, never by message (a driver's message
can quote the SQL and its parameters, i.e. index values such as emails, or a cache key), and a
warning that repeats on every request while a store is down at most once per interval.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback

import falcon
import orjson

log = logging.getLogger("larder.api")

LOG_INTERVAL_SECONDS = 10.0


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


def too_many_invalid_keys(retry_after: int) -> ApiError:
    return ApiError(
        falcon.HTTP_429, "too_many_invalid_keys",
        f"too many invalid API keys from this address; retry in {retry_after}s",
        headers={"Retry-After": str(retry_after)},
    )


def unknown_sync(name: str) -> ApiError:
    return ApiError(falcon.HTTP_404, "unknown_sync", f"sync {name!r} does not exist")


def invalid_values(message: str) -> ApiError:
    return ApiError(falcon.HTTP_400, "invalid_values", message)


def invalid_parameter(message: str) -> ApiError:
    return ApiError(falcon.HTTP_400, "invalid_parameter", message)


def unknown_property(names: list[str], known: list[str]) -> ApiError:
    return ApiError(
        falcon.HTTP_400, "unknown_property",
        f"unknown propert{'y' if len(names) == 1 else 'ies'} {', '.join(map(repr, names))} in the body; "
        f"it takes {', '.join(map(repr, known))}",
    )


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
    """Anything not raised as an HTTPError is a 500 with the same JSON shape (and no internals).

    The log names the route template, not the path (which holds the index value), and the error by
    its class; the traceback's frames say where it happened."""
    log.error("unhandled error on %s %s: %s\n%s", req.method, req.uri_template or "(no route)",
              describe_error(error), "".join(traceback.format_tb(error.__traceback__)).rstrip())
    resp.status = falcon.HTTP_500
    serialize_error(req, resp, ApiError(falcon.HTTP_500, "internal_error", "the server failed to answer this request"))


def describe_error(error: BaseException) -> str:
    """What failed, safe to log: the error's class and those of its causes (a driver's error, an
    errno or SQLSTATE), never their messages."""
    parts = []
    seen: BaseException | None = error
    while seen is not None and len(parts) < 4:
        part = type(seen).__name__
        detail = getattr(seen, "sqlstate", None) or getattr(seen, "errno", None)
        if isinstance(detail, str | int) and not isinstance(detail, bool):
            part += f" [{detail}]"
        parts.append(part)
        seen = getattr(seen, "orig", None) or seen.__cause__
    return " from ".join(parts)


class ThrottledLog:
    """Warnings logged at most once per `interval` seconds for each kind, in this process; the next
    line of a kind says how many were left out since the last one."""

    def __init__(self, logger: logging.Logger, interval: float = LOG_INTERVAL_SECONDS):
        self._logger = logger
        self._interval = interval
        self._lock = threading.Lock()
        self._last: dict[str, list] = {}  # kind → [when last logged, left out since]

    def warning(self, kind: str, message: str, *args) -> None:
        now = time.monotonic()
        with self._lock:
            last = self._last.get(kind)
            if last is not None and now - last[0] < self._interval:
                last[1] += 1
                return
            left_out = last[1] if last is not None else 0
            self._last[kind] = [now, 0]
        if left_out:
            message += " (%d more like this in the last %.0f s, not logged)"
            args = (*args, left_out, self._interval)
        self._logger.warning(message, *args)

    def recovered(self, kind: str, message: str, *args) -> None:
        """Log that what `kind` warned about is over (once), and forget its count."""
        with self._lock:
            last = self._last.pop(kind, None)
        if last is not None:
            if last[1]:
                message += " (%d more warnings before this, not logged)"
                args = (*args, last[1])
            self._logger.warning(message, *args)
