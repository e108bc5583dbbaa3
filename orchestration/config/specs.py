"""Typed configuration: the one definition of what a project, a region and a sync are.

Files are parsed into these models by `orchestration.config.load`; everything else in Larder
(sync engine, Dagster definitions, the API) reads these objects, never raw YAML.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
from enum import Enum
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

COLLECTION_NAME = re.compile(r"^[A-Za-z0-9]{1,64}$")
IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
FIELD_SEGMENT = re.compile(r"^[A-Za-z0-9_\-]{1,64}$")
HOST_PORT = re.compile(r"^[^\s:]+:\d{1,5}$")

# Memcached's default item size is 1 MiB; the envelope header and key take a little of it.
DEFAULT_MAX_RECORD_BYTES = 1_000_000


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DeleteBehaviour(str, Enum):
    """What happens to a record whose row leaves the model."""

    keep = "keep"  # leave everything cached as it is
    clear = "clear"  # remove this sync's fields; the record goes when none remain
    delete = "delete"  # remove the whole record: every index answers 404


class FieldType(str, Enum):
    auto = "auto"
    string = "string"
    number = "number"
    integer = "integer"
    boolean = "boolean"
    json = "json"


class FieldSpec(Strict):
    """One field of the record: a column (selected, renamed, nested) or a Liquid template."""

    column: str | None = None
    to: str | None = None
    liquid: str | None = None
    type: FieldType = FieldType.auto

    @model_validator(mode="after")
    def _one_source(self) -> FieldSpec:
        if (self.column is None) == (self.liquid is None):
            raise ValueError("a field takes exactly one of 'column' or 'liquid'")
        if self.liquid is not None and self.to is None:
            raise ValueError("a Liquid field needs 'to', the field it writes")
        for segment in self.target.split("."):
            if not FIELD_SEGMENT.match(segment):
                raise ValueError(
                    f"target {self.target!r}: each dotted part must be 1-64 letters, digits, '_' or '-'"
                )
        return self

    @property
    def target(self) -> str:
        """Dotted path of the field in the record (`a.b` nests `b` inside `a`)."""
        return self.to if self.to is not None else str(self.column)

    @property
    def path(self) -> tuple[str, ...]:
        return tuple(self.target.split("."))


class FailedDbtTests(str, Enum):
    """What a sync does while a blocking dbt test upstream of its model is failing."""

    hold = "hold"  # do not write; the sync's run says which tests hold it back
    sync = "sync"  # sync anyway


class ModelRef(Strict):
    """Where a sync's rows come from: a dbt model by name, or inline SQL."""

    dbt: str | None = None
    sql: str | None = None

    @model_validator(mode="after")
    def _one_source(self) -> ModelRef:
        if (self.dbt is None) == (self.sql is None):
            raise ValueError("a model takes exactly one of 'dbt' (a dbt model name) or 'sql'")
        return self


class ScheduleTrigger(Strict):
    schedule: str = Field(description="cron expression, e.g. '*/15 * * * *'")
    timezone: str = "UTC"

    @field_validator("schedule")
    @classmethod
    def _cron_has_five_parts(cls, value: str) -> str:
        if len(value.split()) != 5:
            raise ValueError(f"{value!r} is not a 5-part cron expression")
        return value


class UpstreamTrigger(Strict):
    on_upstream_change: Literal[True]


class ManualTrigger(Strict):
    manual: Literal[True] = True


Trigger = ScheduleTrigger | UpstreamTrigger | ManualTrigger


class RejectionPolicy(Strict):
    """A run whose rejected share exceeds `max_share` fails before it writes anything."""

    max_share: Annotated[float, Field(ge=0.0, le=1.0)] = 0.1
    samples: Annotated[int, Field(ge=0, le=1000)] = 20


class SyncSpec(Strict):
    """A sync: model rows → mapped records in one collection, under one or more indices."""

    name: str
    description: str = ""
    owners: tuple[str, ...] = ()
    model: ModelRef
    collection: str
    primary_index: str
    indices: tuple[str, ...] = ()
    fields: tuple[FieldSpec, ...]
    delete: DeleteBehaviour = DeleteBehaviour.clear
    trigger: Trigger = ManualTrigger()
    regions: tuple[str, ...] | None = None
    rejections: RejectionPolicy = RejectionPolicy()
    max_record_bytes: Annotated[int, Field(gt=0, le=50_000_000)] | None = None
    block_on_failed_checks: bool = False
    on_failed_dbt_tests: FailedDbtTests = FailedDbtTests.hold

    @field_validator("name")
    @classmethod
    def _name_is_identifier(cls, value: str) -> str:
        if not IDENTIFIER.match(value):
            raise ValueError(f"{value!r} must be letters, digits and '_' (not starting with a digit)")
        return value

    @field_validator("collection")
    @classmethod
    def _collection_is_alphanumeric(cls, value: str) -> str:
        if not COLLECTION_NAME.match(value):
            raise ValueError(f"{value!r} must be 1-64 alphanumeric characters (it is part of the URL)")
        return value

    @field_validator("primary_index", "indices")
    @classmethod
    def _index_names(cls, value):
        for name in (value,) if isinstance(value, str) else value:
            if not IDENTIFIER.match(name):
                raise ValueError(f"index {name!r} must be letters, digits and '_'")
        return value

    @model_validator(mode="after")
    def _indices_are_top_level_mapped_fields(self, info: ValidationInfo) -> SyncSpec:
        # A model validator's error has no location of its own: each message starts with the field
        # it is about (`indices: ...`), which the loader reports as the location.
        targets = [f.target for f in self.fields]
        duplicates = sorted({t for t in targets if targets.count(t) > 1})
        if duplicates:
            raise ValueError(f"fields: {', '.join(duplicates)} mapped more than once")
        if self.primary_index in self.indices:
            raise ValueError(f"indices: {self.primary_index!r} is already the primary index")
        if (info.context or {}).get("unmapped_indices_allowed"):
            return self
        for key, index in [("primary_index", self.primary_index), *(("indices", i) for i in self.indices)]:
            if index not in targets:
                raise ValueError(
                    f"{key}: index {index!r} is not a mapped top-level field (fields map: {', '.join(targets)})"
                    + self._likely_typo(index)
                )
        return self

    @model_validator(mode="after")
    def _dbt_tests_need_a_dbt_model(self) -> SyncSpec:
        if "on_failed_dbt_tests" in self.model_fields_set and self.model.dbt is None:
            raise ValueError("on_failed_dbt_tests: only a sync reading a dbt model has dbt tests to hold it back")
        return self

    def _likely_typo(self, index: str) -> str:
        """A field whose column, named like the index, is probably the index's column misspelt."""
        named_by_column = {f.column: i for i, f in enumerate(self.fields) if f.to is None and f.column}
        close = difflib.get_close_matches(index, list(named_by_column), n=1, cutoff=0.75)
        if not close:
            return ""
        return f"; fields[{named_by_column[close[0]]}] maps column {close[0]!r} to {close[0]!r}: a typo of {index!r}?"

    @property
    def model_label(self) -> str:
        """How errors name the model: `dbt model 'x'` or `inline SQL model of sync 'y'`."""
        if self.model.dbt is not None:
            return f"dbt model {self.model.dbt!r}"
        return f"inline SQL model of sync {self.name!r}"

    @property
    def index_names(self) -> tuple[str, ...]:
        """The primary index first, then the extra indices."""
        return (self.primary_index, *self.indices)


class RegionSpec(Strict):
    """A Memcached pool and the API process that serves it."""

    servers: tuple[str, ...]
    host: str = "127.0.0.1"
    port: Annotated[int, Field(gt=0, lt=65536)] = 8080
    enabled: bool = True

    @field_validator("servers")
    @classmethod
    def _servers_are_host_port(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("a region needs at least one memcached server")
        for server in value:
            if not HOST_PORT.match(server):
                raise ValueError(f"server {server!r} must be host:port")
        return value


class CollectionSpec(Strict):
    description: str = ""
    max_age: Annotated[int, Field(ge=0, le=86_400)] = 300


class WarehouseSpec(Strict):
    url: str = Field(description="SQLAlchemy URL, e.g. duckdb:///path.duckdb or postgresql+psycopg://...")


class StateSpec(Strict):
    url: str = Field(description="SQLAlchemy URL of the durable state store")


class DbtSpec(Strict):
    project_dir: Path
    profiles_dir: Path | None = None
    target: str | None = None

    @property
    def manifest_path(self) -> Path:
        return self.project_dir / "target" / "manifest.json"


class ApiSpec(Strict):
    key_refresh_seconds: Annotated[float, Field(gt=0, le=5)] = 2.0
    rate_limit_per_second: Annotated[float, Field(gt=0)] | None = None
    fallback_ttl_seconds: Annotated[int, Field(ge=0)] = 3600
    # Failed key checks an address may make per minute before it gets 429 (a brake on guessing).
    invalid_keys_per_minute: Annotated[int, Field(gt=0)] = 300
    # Peers whose X-Forwarded-For names the client (addresses or CIDR networks): the proxies in front.
    trusted_proxies: list[str] = ["127.0.0.1", "::1"]

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, entries: list[str]) -> list[str]:
        for entry in entries:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError as error:
                raise ValueError(f"{entry!r} is not an IP address or network: {error}") from None
        return entries


class Defaults(Strict):
    max_record_bytes: Annotated[int, Field(gt=0, le=50_000_000)] = DEFAULT_MAX_RECORD_BYTES
    chunk_size: Annotated[int, Field(gt=0, le=1_000_000)] = 10_000
    # How long a run waits for another run writing its collection before it fails.
    lease_wait_seconds: Annotated[float, Field(ge=0, le=86_400)] = 300
    # Processes that map a sync's rows (None: one per core but one; 1: all in the sync's own process),
    # once a scan has read `parallel_min_rows` rows: a small sync does not pay for starting them.
    sync_workers: Annotated[int, Field(ge=1, le=256)] | None = None
    # Processes that write a large first sync (None: one per core; 1: the sync's own process), once
    # it has `parallel_min_rows` records to write.
    write_workers: Annotated[int, Field(ge=1, le=256)] | None = None
    parallel_min_rows: Annotated[int, Field(ge=0)] = 20_000


class SyncSource(Strict):
    """Where a sync was declared, for error messages and lineage."""

    kind: Literal["file", "dbt_meta"]
    location: str
    # The sync's key path inside its file ('', 'syncs[1].', 'meta.larder.syncs[0].'), before its fields.
    entry: str = ""


class DeclaredSync(Strict):
    spec: SyncSpec
    source: SyncSource


class ProjectSpec(Strict):
    """The contents of larder.yaml, before the sync files are read."""

    warehouse: WarehouseSpec
    state: StateSpec
    regions: dict[str, RegionSpec]
    collections: dict[str, CollectionSpec] = {}
    dbt: DbtSpec | None = None
    syncs: tuple[str, ...] = ("syncs/*.yaml",)
    api: ApiSpec = ApiSpec()
    defaults: Defaults = Defaults()

    @field_validator("regions")
    @classmethod
    def _regions_named(cls, value: dict[str, RegionSpec]) -> dict[str, RegionSpec]:
        if not value:
            raise ValueError("at least one region is needed")
        for name in value:
            if not IDENTIFIER.match(name):
                raise ValueError(f"region name {name!r} must be letters, digits and '_'")
        return value

    @field_validator("collections")
    @classmethod
    def _collections_named(cls, value: dict[str, CollectionSpec]) -> dict[str, CollectionSpec]:
        for name in value:
            if not COLLECTION_NAME.match(name):
                raise ValueError(f"collection name {name!r} must be alphanumeric")
        return value
