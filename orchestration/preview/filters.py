"""The Liquid filters Braze adds to standard Liquid, with the output Braze documents for each.

Braze's "Advanced filters" and "Filters" pages list them with examples; the table-driven tests
check every documented example. URL filters first, since a value put into a Connected Content
URL must reach the API unchanged:

    url_escape         escapes what a URL may not contain; keeps / ? : @ & = + $ , ; [ ] ! * ' ( )
    url_param_escape   the same, and `&` too (Shopify's and Braze's definition)
    url_encode         standard Liquid: a space becomes `+` (right in a query string, wrong in a path)
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import hashlib
import hmac
import json
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from dateutil import parser as date_parser
from liquid import Environment
from liquid.exceptions import FilterArgumentError, FilterValueError
from liquid.stringify import to_liquid_string
from liquid.undefined import is_undefined

# Ruby's URI.escape leaves unreserved and reserved characters alone and escapes the rest, `#` and
# `%` included; Python's quote() always keeps letters, digits and `_.-~`.
URL_ESCAPE_SAFE = ";/?:@&=+$,[]!*'()"
OFFSET = re.compile(r"^([+-])(\d{2}):?(\d{2})$")


def url_escape(value: Any) -> str:
    """`{{ 'hey<>hi' | url_escape }}` → `hey%3C%3Ehi`; a space is `%20`."""
    return quote(_text(value), safe=URL_ESCAPE_SAFE)


def url_param_escape(value: Any) -> str:
    """`{{ 'hey<&>hi' | url_param_escape }}` → `hey%3C%26%3Ehi`."""
    return url_escape(value).replace("&", "%26")


def md5(value: Any) -> str:
    return hashlib.md5(_bytes(value)).hexdigest()


def sha1(value: Any) -> str:
    return hashlib.sha1(_bytes(value)).hexdigest()


def sha2(value: Any) -> str:
    """SHA-256, as a hex string."""
    return hashlib.sha256(_bytes(value)).hexdigest()


def _hmac(digest: str, encode: Callable[[bytes], str]) -> Callable[[Any, Any], str]:
    def sign(value: Any, key: Any) -> str:
        return encode(hmac.new(_bytes(key), _bytes(value), digest).digest())

    return sign


def _hex(raw: bytes) -> str:
    return raw.hex()


def _base64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def property_accessor(value: Any, key: Any) -> Any:
    """`{{ hash | property_accessor: 'a' }}`: the value at `key`, nil when there is none."""
    if isinstance(value, dict):
        return value.get(key if isinstance(key, str) else _text(key))
    return None


def number_with_delimiter(value: Any) -> str:
    """`{{ 123456 | number_with_delimiter }}` → `123,456`; decimals are kept as they are."""
    text = _text(value).strip()
    try:
        decimal.Decimal(text)
    except decimal.InvalidOperation:
        return _text(value)
    sign, digits = ("-", text[1:]) if text.startswith("-") else ("", text)
    whole, dot, fraction = digits.partition(".")
    return f"{sign}{int(whole or 0):,}{dot}{fraction}"


def json_escape(value: Any) -> str:
    """Escapes `"`, `\\` and control characters, for a string put inside a JSON document."""
    return json.dumps(_text(value), ensure_ascii=False)[1:-1]


def json_parse(value: Any) -> Any:
    try:
        return json.loads(_text(value))
    except json.JSONDecodeError as error:
        raise FilterValueError(f"json_parse: not JSON: {error}", token=None) from None


def as_json_string(value: Any) -> str:
    return json.dumps(None if is_undefined(value) else value, ensure_ascii=False, separators=(",", ":"),
                      default=str)


def time_zone(value: Any, zone: Any) -> Any:
    """The time in another zone: `{{ 'now' | time_zone: 'America/Chicago' | date: '%H:%M' }}`.

    Times without a zone are UTC, as in Braze; `zone` is an IANA name or an offset like `-05:00`.
    """
    moment = _to_datetime(value)
    if moment is None:
        return value
    return ZonedTime.of(moment.astimezone(_to_zone(zone)))


class ZonedTime(dt.datetime):
    """An aware datetime unequal to the same instant in another zone.

    python-liquid's `date` filter caches its input by equality, and aware datetimes of one instant
    are equal whatever their zone: without this, `date` could format a time in the zone of an
    earlier one.
    """

    @classmethod
    def of(cls, moment: dt.datetime) -> ZonedTime:
        return cls(moment.year, moment.month, moment.day, moment.hour, moment.minute, moment.second,
                   moment.microsecond, tzinfo=moment.tzinfo, fold=moment.fold)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ZonedTime) and self._identity() == other._identity()

    def __hash__(self) -> int:
        return hash(self._identity())

    def _identity(self) -> tuple[str, str | None]:
        return self.isoformat(), self.tzname()


def register_braze_filters(environment: Environment) -> None:
    """Add Braze's own filters to a python-liquid environment (standard ones are built in)."""
    filters: dict[str, Callable[..., Any]] = {
        "url_escape": url_escape,
        "url_param_escape": url_param_escape,
        "md5": md5,
        "sha1": sha1,
        "sha2": sha2,
        "hmac_sha1_hex": _hmac("sha1", _hex),
        "hmac_sha1": _hmac("sha1", _hex),  # the name Braze used before hmac_sha1_hex
        "hmac_sha1_base64": _hmac("sha1", _base64),
        "hmac_sha256_hex": _hmac("sha256", _hex),
        "hmac_sha256": _hmac("sha256", _hex),
        "hmac_sha256_base64": _hmac("sha256", _base64),
        "property_accessor": property_accessor,
        "number_with_delimiter": number_with_delimiter,
        "json_escape": json_escape,
        "json_parse": json_parse,
        "as_json_string": as_json_string,
        "time_zone": time_zone,
    }
    for name, function in filters.items():
        environment.add_filter(name, function)


def _text(value: Any) -> str:
    return "" if is_undefined(value) else to_liquid_string(value, autoescape=False)


def _bytes(value: Any) -> bytes:
    return _text(value).encode()


def _to_datetime(value: Any) -> dt.datetime | None:
    if is_undefined(value) or value is None:
        return None
    if isinstance(value, str) and value in ("now", "today"):
        return dt.datetime.now(dt.UTC)
    if isinstance(value, dt.datetime):
        moment = value
    elif isinstance(value, dt.date):
        moment = dt.datetime.combine(value, dt.time.min)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        return dt.datetime.fromtimestamp(value, dt.UTC)
    elif isinstance(value, str):
        try:
            moment = date_parser.parse(value)
        except (ValueError, OverflowError):
            return None
    else:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=dt.UTC)


def _to_zone(zone: Any) -> dt.tzinfo:
    name = _text(zone).strip()
    offset = OFFSET.match(name)
    if offset:
        sign, hours, minutes = offset.groups()
        delta = dt.timedelta(hours=int(hours), minutes=int(minutes))
        return dt.timezone(-delta if sign == "-" else delta)
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise FilterArgumentError(f"time_zone: unknown time zone {name!r}", token=None) from None
