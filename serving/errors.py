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
from typing import Any

import falcon
import orjson

from serving.contract import ERROR_STATUS, FALCON_STATUS_CODES, STATE_RETRY_AFTER_SECONDS, Error, ErrorCode

log = logging.getLogger("larder.api")

LOG_INTERVAL_SECONDS = 10.0


class ApiError(falcon.HTTPError):
    """An error with a stable machine-readable code, answered with that code's status."""

    def __init__(self, code: ErrorCode, message: str, headers: dict[str, str] | None = None):
        status = ERROR_STATUS[code]
        super().__init__(falcon.code_to_http_status(status), title=code.value, description=message, headers=headers)
        self.error_code = code
        self.message = message


def unknown_collection(name: str) -> ApiError:
    return ApiError(ErrorCode.UNKNOWN_COLLECTION, f"collection {name!r} does not exist")


def unknown_index(collection: str, index: str, known: tuple[str, ...]) -> ApiError:
    return ApiError(
        ErrorCode.UNKNOWN_INDEX,
        f"collection {collection!r} has no index {index!r} (indices: {', '.join(known)})",
    )


def record_not_found(collection: str, index: str) -> ApiError:
    return ApiError(ErrorCode.RECORD_NOT_FOUND, f"no record in {collection!r} with that {index}")


def missing_key() -> ApiError:
    return ApiError(
        ErrorCode.MISSING_API_KEY,
        "send an API key as 'Authorization: Bearer <key>'",
        headers={"WWW-Authenticate": 'Bearer realm="larder"'},
    )


def bad_key() -> ApiError:
    return ApiError(
        ErrorCode.INVALID_API_KEY,
        "the API key is not valid (unknown, malformed or revoked)",
        headers={"WWW-Authenticate": 'Bearer realm="larder", error="invalid_token"'},
    )


def out_of_scope(what: str) -> ApiError:
    return ApiError(ErrorCode.OUT_OF_SCOPE, f"this API key may not read {what}")


def keys_unavailable() -> ApiError:
    return ApiError(
        ErrorCode.KEYS_UNAVAILABLE, "API keys cannot be checked: the state store is unreachable",
        headers={"Retry-After": str(STATE_RETRY_AFTER_SECONDS)},
    )


def state_unavailable(message: str) -> ApiError:
    return ApiError(ErrorCode.STATE_UNAVAILABLE, message, headers={"Retry-After": str(STATE_RETRY_AFTER_SECONDS)})


def rate_limited(retry_after: int) -> ApiError:
    return ApiError(
        ErrorCode.RATE_LIMITED, f"this API key's rate limit is exceeded; retry in {retry_after}s",
        headers={"Retry-After": str(retry_after)},
    )


def too_many_invalid_keys(retry_after: int) -> ApiError:
    return ApiError(
        ErrorCode.TOO_MANY_INVALID_KEYS,
        f"too many invalid API keys from this address; retry in {retry_after}s",
        headers={"Retry-After": str(retry_after)},
    )


def unknown_sync(name: str) -> ApiError:
    return ApiError(ErrorCode.UNKNOWN_SYNC, f"sync {name!r} does not exist")


def invalid_values(message: str) -> ApiError:
    return ApiError(ErrorCode.INVALID_VALUES, message)


def invalid_parameter(message: str) -> ApiError:
    return ApiError(ErrorCode.INVALID_PARAMETER, message)


def unknown_property(names: list[str], known: list[str]) -> ApiError:
    return ApiError(
        ErrorCode.UNKNOWN_PROPERTY,
        f"unknown propert{'y' if len(names) == 1 else 'ies'} {', '.join(map(repr, names))} in the body; "
        f"it takes {', '.join(map(repr, known))}",
    )


def not_ready(message: str) -> ApiError:
    return ApiError(ErrorCode.NOT_READY, message)


def serialize_error(req: falcon.Request, resp: falcon.Response, error: falcon.HTTPError) -> None:
    if isinstance(error, ApiError):
        body: Error = {"error": {"code": error.error_code, "message": error.message}}
    else:  # Falcon's own
        code = FALCON_STATUS_CODES.get(error.status_code, ErrorCode.ERROR)
        body = {"error": {"code": code, "message": error.description or _default_message(req, error.status_code, code)}}
    resp.data = orjson.dumps(body)
    resp.content_type = falcon.MEDIA_JSON
    resp.append_header("Vary", "Accept")


def _default_message(req: falcon.Request, status: int, code: str) -> str:
    if status == 404:
        return f"no endpoint at {req.path!r}; see /openapi.json"
    if status == 405:
        return f"{req.method} is not allowed on {req.path!r}; see /openapi.json"
    return code.replace("_", " ")


def handle_unexpected(req: falcon.Request, resp: falcon.Response, error: Exception, params: dict[str, Any]) -> None:
    """Anything not raised as an HTTPError is a 500 with the same JSON shape (and no internals).

    The log names the route template, not the path (which holds the index value), and the error by
    its class; the traceback's frames say where it happened."""
    log.error("unhandled error on %s %s: %s\n%s", req.method, req.uri_template or "(no route)",
              describe_error(error), "".join(traceback.format_tb(error.__traceback__)).rstrip())
    resp.status = falcon.HTTP_500
    serialize_error(req, resp, ApiError(ErrorCode.INTERNAL_ERROR, "the server failed to answer this request"))


def describe_error(error: BaseException) -> str:
    """What failed, safe to log: the error's class and those of its causes (a driver's error, an
    errno or SQLSTATE), never their messages."""
    parts: list[str] = []
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
