"""The Memcached key layout: any index value gives a valid key, and keys never collide."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestration.store.keys import MAX_KEY_BYTES, index_text, record_key

collections = st.from_regex(r"[A-Za-z0-9]{1,64}", fullmatch=True)
index_names = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,63}", fullmatch=True)
# Every code point Python strings can hold, surrogates and control characters included.
values = st.one_of(
    st.text(st.characters(codec=None, exclude_categories=()), min_size=1, max_size=300),
    st.text(st.sampled_from("a /\t\n\r\x00\x7f:=#%é世🙂"), min_size=1, max_size=50),
    st.from_regex(r"[A-Za-z0-9._@+\-]{1,120}", fullmatch=True),
)


def assert_valid_memcached_key(key: str) -> None:
    raw = key.encode("ascii")  # raises for anything non-ASCII
    assert len(raw) <= MAX_KEY_BYTES
    assert all(33 <= byte < 127 for byte in raw), key  # no whitespace, no control characters


@settings(max_examples=300, deadline=None)
@given(collections, index_names, values)
def test_any_index_value_gives_a_valid_memcached_key(collection, index, value):
    assert_valid_memcached_key(record_key(collection, index, value))


def test_a_ten_kilobyte_value_gives_a_valid_key():
    assert_valid_memcached_key(record_key("c" * 64, "i" * 64, "é" * 10_000))


@settings(max_examples=300, deadline=None)
@given(st.tuples(collections, index_names, values), st.tuples(collections, index_names, values))
def test_distinct_collection_index_value_triples_never_share_a_key(a, b):
    if a != b:
        assert record_key(*a) != record_key(*b)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (("ab", "c", "d"), ("a", "bc", "d")),
        (("a", "b", "c:d"), ("a", "b:c", "d")),
        (("a", "b", "x"), ("a", "b", "#x")),
        (("a", "b", "a" * 100), ("a", "b", "a" * 101)),
        (("a", "b", "Jane"), ("a", "b", "jane")),
    ],
)
def test_near_miss_triples_get_different_keys(a, b):
    assert record_key(*a) != record_key(*b)


def test_readable_values_stay_readable():
    assert record_key("customers", "email", "jane.doe@example.com") == "L1:customers:email:=jane.doe@example.com"


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (12345, "12345"),
        (12345.0, "12345"),
        (Decimal("12345.00"), "12345"),
        (Decimal("1.50"), "1.5"),
        (1.5, "1.5"),
        (True, "true"),
        ("Jane Doe", "Jane Doe"),
        (date(2023, 1, 15), "2023-01-15"),
        (datetime(2023, 1, 15, 8, 30), "2023-01-15T08:30:00"),
        (None, None),
        ("", None),
        (float("nan"), None),
    ],
)
def test_index_text_is_the_value_as_written_in_a_url(value, text):
    assert index_text(value) == text
