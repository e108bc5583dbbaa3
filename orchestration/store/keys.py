"""The Memcached key layout: the only place a cache key is made.

    L1:{collection}:{index}:={value}        values of up to 100 safe characters, kept readable
    L1:{collection}:{index}:#{digest}       anything else: base64url(blake2b-160 of the UTF-8 value)

Collections are alphanumeric and index names are identifiers, so ':' separates them unambiguously;
'=' and '#' keep the two value forms apart, and the safe alphabet has neither. Every key is ASCII,
has no whitespace or control characters and stays under Memcached's 250-byte limit.
"""

from __future__ import annotations

import base64
import hashlib
import math
from datetime import date, datetime
from decimal import Decimal

KEY_VERSION = "L1"
SAFE_CHARACTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._@+-"
MAX_READABLE_VALUE = 100
MAX_KEY_BYTES = 250
SENTINEL_KEY = f"{KEY_VERSION}:_larder:sentinel"


def record_key(collection: str, index: str, value: str) -> str:
    """The cache key of a record under one index value (value already in text form)."""
    # Stripping the safe characters leaves nothing only if there is no other (a regex costs twice as much).
    if 0 < len(value) <= MAX_READABLE_VALUE and not value.strip(SAFE_CHARACTERS):
        return f"{KEY_VERSION}:{collection}:{index}:={value}"
    digest = hashlib.blake2b(value.encode("utf-8", "surrogatepass"), digest_size=20).digest()
    return f"{KEY_VERSION}:{collection}:{index}:#{base64.urlsafe_b64encode(digest).decode('ascii')}"


def index_text(value: object) -> str | None:
    """The text form of an index value, as it appears in a URL; None for a value that cannot index.

    Integers (and integral floats and decimals) print as digits, so `12345` and `12345.0` both
    answer `/records/user_id/12345`; booleans as true/false; strings as they are.
    """
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, Decimal):
        return str(int(value)) if value == value.to_integral_value() else str(value.normalize())
    if isinstance(value, str):
        return value if value else None
    if isinstance(value, datetime | date):
        return value.isoformat()
    return str(value)


def counter_key(kind: str, subject: str, window: int) -> str:
    """The key of an API counter: `kind` (rate, attempts), who it counts (an API key's prefix, a
    client address) and the window it counts in (its first epoch second)."""
    return f"{KEY_VERSION}:_larder:{kind}:{subject}:{window}"
