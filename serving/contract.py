"""The API's contract, defined once: error codes, enums, limits and the shapes of its JSON answers.

The handlers build their answers as these types and serving/openapi.py generates the OpenAPI
document from them, so an error code or an answer's field cannot be added here and forgotten
there (tests/serving/test_contract.py checks both ways). `Annotated[T, "text"]` is a field's
description in the document; a `NotRequired` field is one the answer may leave out.
"""

from enum import StrEnum
from typing import Annotated, Any, Literal, NotRequired, TypedDict

import orjson

# The sync configuration's enums, as the API shows them (a sync's `delete`, a field's `type`).
from orchestration.config.specs import DeleteBehaviour, FieldType
from orchestration.store.state import RunStatus  # a run's status is the state store's: re-exported here


class ErrorCode(StrEnum):
    """Every `error.code` an answer can carry: the API's, Falcon's (from the status), the proxy's."""

    # The API's own.
    UNKNOWN_COLLECTION = "unknown_collection"
    UNKNOWN_INDEX = "unknown_index"
    RECORD_NOT_FOUND = "record_not_found"
    UNKNOWN_SYNC = "unknown_sync"
    MISSING_API_KEY = "missing_api_key"
    INVALID_API_KEY = "invalid_api_key"
    OUT_OF_SCOPE = "out_of_scope"
    RATE_LIMITED = "rate_limited"
    TOO_MANY_INVALID_KEYS = "too_many_invalid_keys"
    INVALID_VALUES = "invalid_values"
    INVALID_PARAMETER = "invalid_parameter"
    UNKNOWN_PROPERTY = "unknown_property"
    KEYS_UNAVAILABLE = "keys_unavailable"
    STATE_UNAVAILABLE = "state_unavailable"
    NOT_READY = "not_ready"
    # Falcon's own errors, named after their status (FALCON_STATUS_CODES), and an unexpected error (500).
    BAD_REQUEST = "bad_request"
    UNAUTHORIZED = "unauthorized"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    NOT_ACCEPTABLE = "not_acceptable"
    LENGTH_REQUIRED = "length_required"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    URI_TOO_LONG = "uri_too_long"
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
    HEADERS_TOO_LARGE = "headers_too_large"
    INTERNAL_ERROR = "internal_error"
    UNAVAILABLE = "unavailable"
    ERROR = "error"  # a status none of the above covers
    # The proxy's (serving/proxy.py PROXY_ERRORS), besides some of Falcon's above.
    REQUEST_TIMEOUT = "request_timeout"
    BAD_GATEWAY = "bad_gateway"
    GATEWAY_TIMEOUT = "gateway_timeout"


# The status each code is answered with.
ERROR_STATUS: dict[ErrorCode, int] = {
    ErrorCode.UNKNOWN_COLLECTION: 404,
    ErrorCode.UNKNOWN_INDEX: 404,
    ErrorCode.RECORD_NOT_FOUND: 404,
    ErrorCode.UNKNOWN_SYNC: 404,
    ErrorCode.MISSING_API_KEY: 401,
    ErrorCode.INVALID_API_KEY: 401,
    ErrorCode.OUT_OF_SCOPE: 403,
    ErrorCode.RATE_LIMITED: 429,
    ErrorCode.TOO_MANY_INVALID_KEYS: 429,
    ErrorCode.INVALID_VALUES: 400,
    ErrorCode.INVALID_PARAMETER: 400,
    ErrorCode.UNKNOWN_PROPERTY: 400,
    ErrorCode.KEYS_UNAVAILABLE: 503,
    ErrorCode.STATE_UNAVAILABLE: 503,
    ErrorCode.NOT_READY: 503,
    ErrorCode.BAD_REQUEST: 400,
    ErrorCode.UNAUTHORIZED: 401,
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.METHOD_NOT_ALLOWED: 405,
    ErrorCode.NOT_ACCEPTABLE: 406,
    ErrorCode.LENGTH_REQUIRED: 411,
    ErrorCode.PAYLOAD_TOO_LARGE: 413,
    ErrorCode.URI_TOO_LONG: 414,
    ErrorCode.UNSUPPORTED_MEDIA_TYPE: 415,
    ErrorCode.HEADERS_TOO_LARGE: 431,
    ErrorCode.INTERNAL_ERROR: 500,
    ErrorCode.UNAVAILABLE: 503,
    ErrorCode.ERROR: 500,
    ErrorCode.REQUEST_TIMEOUT: 408,
    ErrorCode.BAD_GATEWAY: 502,
    ErrorCode.GATEWAY_TIMEOUT: 504,
}

# Falcon's own errors (unknown route, bad method, malformed body, ...) get the code of their status.
FALCON_STATUS_CODES: dict[int, ErrorCode] = {
    400: ErrorCode.BAD_REQUEST,
    401: ErrorCode.UNAUTHORIZED,
    403: ErrorCode.FORBIDDEN,
    404: ErrorCode.NOT_FOUND,
    405: ErrorCode.METHOD_NOT_ALLOWED,
    406: ErrorCode.NOT_ACCEPTABLE,
    411: ErrorCode.LENGTH_REQUIRED,
    413: ErrorCode.PAYLOAD_TOO_LARGE,
    414: ErrorCode.URI_TOO_LONG,
    415: ErrorCode.UNSUPPORTED_MEDIA_TYPE,
    429: ErrorCode.RATE_LIMITED,
    431: ErrorCode.HEADERS_TOO_LARGE,
    500: ErrorCode.INTERNAL_ERROR,
    503: ErrorCode.UNAVAILABLE,
}

# Codes answered with a Retry-After header (seconds).
RETRY_AFTER_CODES = frozenset({
    ErrorCode.RATE_LIMITED, ErrorCode.TOO_MANY_INVALID_KEYS, ErrorCode.KEYS_UNAVAILABLE,
    ErrorCode.STATE_UNAVAILABLE, ErrorCode.BAD_GATEWAY, ErrorCode.GATEWAY_TIMEOUT,
})


class Source(StrEnum):
    """X-Larder-Source: where a record came from."""

    CACHE = "cache"
    STATE = "state"  # the durable state, after a cache miss
    STATE_CACHE_DOWN = "state-cache-down"  # the durable state, while the cache is unreachable


# Limits.
MAX_BATCH_VALUES = 100  # values of one batch lookup
BATCH_BODY_PROPERTIES = ("values",)
MAX_RUNS = 100  # runs one /v1/syncs/{sync}/runs answer lists
DEFAULT_RUNS = 20
MAX_BODY = "1m"  # a request body, in nginx's units (a batch POST of 100 values needs a few KB)
MAX_LINE = "64k"  # the request line and each header line (a batch GET of 100 long values fits)
# Retry-After of a 503 keys_unavailable or state_unavailable (the state store is probed this often).
STATE_RETRY_AFTER_SECONDS = 1


# Answers. `orjson.Fragment` is a record's JSON exactly as synced (the document's Record).
RecordBody = orjson.Fragment


class ErrorDetail(TypedDict):
    code: ErrorCode
    message: str


class Error(TypedDict):
    """Every 4xx/5xx answer."""

    error: ErrorDetail


class BatchRequest(TypedDict):
    values: list[str | int]


class BatchAnswer(TypedDict):
    """Found records keyed by value, and the values with no record."""

    records: dict[str, RecordBody]
    missing: list[str]


class Collection(TypedDict):
    name: str
    description: str
    max_age: int
    primary_index: str | None
    indices: list[str]
    syncs: list[str]
    lookup: str


class Collections(TypedDict):
    collections: list[Collection]


class Run(TypedDict):
    """A sync run as the API shows it (rejection samples only in a sync's run list)."""

    id: int
    status: RunStatus
    full_resync: bool
    started_at: float
    finished_at: float | None
    duration_seconds: float | None
    regions: list[str]
    counts: dict[str, int]
    rejection_samples: NotRequired[list[dict[str, Any]]]
    error: str | None
    origin: str | None


class SyncRuns(TypedDict):
    sync: str
    collection: str
    runs: list[Run]


class DeclaredIn(TypedDict):
    kind: Literal["file", "dbt_meta"]
    location: str


class Model(TypedDict):
    """The model a sync reads: a dbt model (with what the manifest says of it) or its own SQL."""

    kind: Literal["dbt", "sql"]
    name: NotRequired[str]
    unique_id: NotRequired[str]
    relation: NotRequired[str]
    file: NotRequired[str]
    description: NotRequired[str]
    sql: NotRequired[str]
    upstream: Annotated[list[str], "dbt unique ids, transitively"]


class SyncDeclaration(TypedDict):
    name: str
    description: str
    owners: list[str]
    declared_in: DeclaredIn
    model: Model
    primary_index: str
    indices: list[str]
    delete: DeleteBehaviour
    trigger: dict[str, Any]
    regions: list[str]


class SyncLineage(SyncDeclaration):
    last_run: Run | None
    last_successful_run: Run | None
    data_age_seconds: Annotated[float | None, "Seconds since the last successful run read the model."]


class FieldSource(TypedDict):
    column: NotRequired[str]
    liquid: NotRequired[str]


class FieldLineage(TypedDict):
    field: str
    sync: str
    source: FieldSource
    type: FieldType


class Lineage(TypedDict):
    """A collection (as in Collections) with its syncs' lineage and its fields' sources."""

    name: str
    description: str
    max_age: int
    primary_index: str | None
    indices: list[str]
    syncs: list[SyncLineage]
    lookup: str
    fields: list[FieldLineage]


class Health(TypedDict):
    status: Literal["ok"]


class ConfigDetail(TypedDict):
    loaded_at: float
    syncs: int
    status: Literal["current", "stale"]
    error: NotRequired[Annotated[str, "Why the configuration on disk is not in use."]]


class Readiness(TypedDict):
    status: Literal["ready"]
    region: str
    config: NotRequired[ConfigDetail]


# The answers' types, each a schema of the OpenAPI document's components under its own name.
MODELS: tuple[type, ...] = (
    Error, ErrorDetail, BatchRequest, BatchAnswer, Collection, Collections, Run, SyncRuns, DeclaredIn, Model,
    SyncLineage, FieldSource, FieldLineage, Lineage, Health, ConfigDetail, Readiness,
)
