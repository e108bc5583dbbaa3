"""How a record is stored as a Memcached value: a fixed-size header, then the JSON body.

    b"L1" + etag (16 hex chars) + synced_at (10 decimal digits, epoch seconds) + JSON body

The API slices the header off and sends the body bytes as they are: no decode, no re-encode.
"""

from __future__ import annotations

import hashlib
from typing import NamedTuple

MAGIC = b"L1"
ETAG_LEN = 16
TIME_LEN = 10
HEADER_LEN = len(MAGIC) + ETAG_LEN + TIME_LEN


class Envelope(NamedTuple):
    etag: str
    synced_at: int
    body: bytes


def body_etag(body: bytes) -> bytes:
    return hashlib.blake2b(body, digest_size=ETAG_LEN // 2).hexdigest().encode("ascii")


def pack(body: bytes, synced_at: int) -> bytes:
    """Wrap a record's JSON body for the cache."""
    return MAGIC + body_etag(body) + b"%010d" % synced_at + body


def unpack(value: bytes) -> Envelope:
    """Split a cached value; raises ValueError for anything not written by `pack`."""
    if len(value) < HEADER_LEN or value[:2] != MAGIC:
        raise ValueError("not a Larder record envelope")
    return Envelope(
        etag=value[2 : 2 + ETAG_LEN].decode("ascii"),
        synced_at=int(value[2 + ETAG_LEN : HEADER_LEN]),
        body=value[HEADER_LEN:],
    )
