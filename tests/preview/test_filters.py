"""Braze's own Liquid filters give the output Braze documents for each example."""

from __future__ import annotations

import pytest
from liquid.exceptions import LiquidError

from orchestration.preview.braze import ApiTarget, render_template

NOWHERE = ApiTarget("http://127.0.0.1:9")  # no template here makes a call


def render(source: str, **variables) -> str:
    return render_template(source, NOWHERE, variables).text


# Every example of Braze's "Advanced filters" page, as documented (input → output).
BRAZE_EXAMPLES = [
    ("{{'hey' | md5}}", "6057f13c496ecf7fd777ceb9e79ae285"),
    ("{{'hey' | sha1}}", "7f550a9f4c44173a37664d938f1355f0f92a47a7"),
    ("{{'hey' | sha2}}", "fa690b82061edfd2852629aeba8a8977b57e40fcb77d1a7a28b26cba62591204"),
    ("{{'blah' | base64_encode}}", "YmxhaA=="),
    ("{{'hey' | hmac_sha1_hex: 'secret_key'}}", "2a3969bed25bfeefb00aca4063eb9590b4df8f0e"),
    ("{{'hey' | hmac_sha1: 'secret_key'}}", "2a3969bed25bfeefb00aca4063eb9590b4df8f0e"),
    ("{{'hey' | hmac_sha1_base64: 'secret_key'}}", "KjlpvtJb/u+wCspAY+uVkLTfjw4="),
    ("{{'hey' | hmac_sha256_hex: 'secret_key'}}", "8df897f8da3d7992fe57c8dbc6f27578cfbf2dcc4d0fbb4000b8c924841d508e"),
    ("{{'hey' | hmac_sha256_base64: 'secret_key'}}", "jfiX+No9eZL+V8jbxvJ1eM+/LcxND7tAALjJJIQdUI4="),
    ("{{'hey<>hi' | url_escape}}", "hey%3C%3Ehi"),
    ("{{'hey<&>hi' | url_param_escape}}", "hey%3C%26%3Ehi"),
    ("{{ 'google search' | url_encode }}", "google+search"),
    ("{{ 123456 | number_with_delimiter }}", "123,456"),
    ("{{ hash | property_accessor: 'a' }}", "42"),
]


@pytest.mark.parametrize(("source", "expected"), BRAZE_EXAMPLES)
def test_braze_documented_examples(source, expected):
    assert render(source, hash={"a": 42, "b": 0}) == expected


@pytest.mark.parametrize(
    ("value", "url_escape", "url_param_escape"),
    [
        ("u 2", "u%202", "u%202"),  # never '+': in a path that is a plus sign, not a space
        ("zoë müller@example.com", "zo%C3%AB%20m%C3%BCller@example.com", "zo%C3%AB%20m%C3%BCller@example.com"),
        ("a&b=c+d", "a&b=c+d", "a%26b=c+d"),
        ("100%#1", "100%25%231", "100%25%231"),
        ("<p>Health & Love potions</p>", "%3Cp%3EHealth%20&%20Love%20potions%3C/p%3E",
         "%3Cp%3EHealth%20%26%20Love%20potions%3C/p%3E"),  # Shopify's documented example, same filters
        (12345, "12345", "12345"),
    ],
)
def test_url_filters_escape_like_ruby_uri_escape(value, url_escape, url_param_escape):
    assert render("{{ v | url_escape }}|{{ v | url_param_escape }}", v=value) == f"{url_escape}|{url_param_escape}"


@pytest.mark.parametrize(
    ("value", "expected"),
    [(1234567, "1,234,567"), (-1234.5, "-1,234.5"), ("1234567.891", "1,234,567.891"), (999, "999"), ("n/a", "n/a")],
)
def test_number_with_delimiter_groups_thousands_and_keeps_decimals(value, expected):
    assert render("{{ v | number_with_delimiter }}", v=value) == expected


def test_json_filters_escape_parse_and_write_json():
    assert render('{"note": "{{ v | json_escape }}"}', v='say "hi"\\ \n ok') == '{"note": "say \\"hi\\"\\\\ \\n ok"}'
    source = ("{% assign items = '[{\"id\":\"1\",\"store_name\":\"demo-store\"}]' | json_parse %}"
              "{{ items[0].store_name }} {{ items | as_json_string }}")
    assert render(source) == 'demo-store [{"id":"1","store_name":"demo-store"}]'


def test_time_zone_converts_a_utc_time_before_date_formats_it():
    source = "{{ t | time_zone: 'America/Los_Angeles' | date: '%Y-%m-%d %H:%M %z' }}"
    assert render(source, t="2021-08-04 9:00:00 UTC") == "2021-08-04 02:00 -0700"
    assert render(source, t="2021-08-04 09:00:00") == "2021-08-04 02:00 -0700"  # no zone: UTC
    assert render("{{ t | time_zone: '+05:30' | date: '%H:%M' }}", t="2021-08-04T09:00:00Z") == "14:30"
    assert len(render("{{ 'now' | time_zone: 'America/Chicago' | date: '%Y-%m-%d' }}")) == 10


def test_time_zone_refuses_an_unknown_zone():
    with pytest.raises(LiquidError, match="unknown time zone 'Mars/Olympus'"):
        render("{{ 'now' | time_zone: 'Mars/Olympus' }}")
