"""Row → record: select, rename, nest, warehouse types kept as JSON, Liquid transforms with types."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

import orjson
import pytest

from orchestration.config.specs import SyncSpec
from orchestration.sync.mapping import RecordMapper, RowRejected
from tests.sync.conftest import sync_config


def test_select_rename_and_nest_shape_the_record(harness):
    harness.table("people", "id integer, name varchar, city varchar, secret varchar", [(1, "Ann", "Oslo", "x")])
    harness.configure(sync_config(fields=[
        {"column": "id"},
        {"column": "name", "to": "full_name"},
        {"column": "city", "to": "address.city"},
        {"column": "name", "to": "address.recipient.name"},
    ]))
    harness.run("people")
    assert harness.get("people", "id", 1) == {
        "id": 1, "full_name": "Ann", "address": {"city": "Oslo", "recipient": {"name": "Ann"}},
    }


def test_duckdb_nested_and_scalar_types_become_json(harness):
    harness.sql("""
        create table people as select
            7 as id,
            {'songs': 3, 'genres': ['house', 'techno']} as summary,
            [{'artist': 'A', 'on': date '2023-02-01'}] as concerts,
            '{"a": [1, {"b": null}]}'::json as prefs,
            map {'k': 1} as counters,
            1492.18::decimal(10, 2) as ltv,
            10::decimal(10, 0) as whole,
            date '2023-01-15' as joined,
            timestamp '2023-01-14 22:44:25' as last_seen,
            timestamptz '2023-01-14 22:44:25+00' as last_seen_tz,
            interval 90 minute as session,
            true as active,
            null::varchar as nickname
    """)
    columns = ["summary", "concerts", "prefs", "counters", "ltv", "whole", "joined", "last_seen",
               "last_seen_tz", "session", "active", "nickname"]
    harness.configure(sync_config(fields=[{"column": "id"}, *({"column": c} for c in columns)]))
    harness.run("people")
    assert harness.get("people", "id", 7) == {
        "id": 7,
        "summary": {"songs": 3, "genres": ["house", "techno"]},
        "concerts": [{"artist": "A", "on": "2023-02-01"}],
        "prefs": {"a": [1, {"b": None}]},
        "counters": {"k": 1},
        "ltv": 1492.18,
        "whole": 10,
        "joined": "2023-01-15",
        "last_seen": "2023-01-14T22:44:25",
        "last_seen_tz": "2023-01-14T22:44:25+00:00",
        "session": 5400.0,
        "active": True,
        "nickname": None,
    }


def test_postgres_json_jsonb_arrays_and_numerics_become_json(harness, postgres_url):
    harness.warehouse_url = postgres_url
    harness.sql(
        "create table people (id bigint, prefs json, tags jsonb, scores integer[], names text[], "
        "ltv numeric(10, 2), joined date, seen timestamptz, ratio double precision)",
        "insert into people values (42, '{\"a\": {\"b\": [1, 2]}}', '[\"x\", {\"y\": true}]', '{1,2,3}', "
        "'{\"a b\",c}', 12.50, '2023-01-15', '2023-01-14 22:44:25+00', 0.25)",
    )
    harness.configure(
        sync_config(fields=[{"column": c} for c in ("id", "prefs", "tags", "scores", "names", "ltv", "joined", "seen", "ratio")]),
        warehouse_url=postgres_url,
    )
    harness.run("people")
    assert harness.get("people", "id", 42) == {
        "id": 42,
        "prefs": {"a": {"b": [1, 2]}},
        "tags": ["x", {"y": True}],
        "scores": [1, 2, 3],
        "names": ["a b", "c"],
        "ltv": 12.5,
        "joined": "2023-01-15",
        "seen": "2023-01-14T22:44:25+00:00",
        "ratio": 0.25,
    }


def _mapper(*fields: dict, max_record_bytes: int = 1_000_000) -> RecordMapper:
    spec = SyncSpec.model_validate(sync_config(fields=[{"column": "id"}, *fields]))
    return RecordMapper(spec, max_record_bytes=max_record_bytes)


ROW = {
    "id": 1, "name": "Jane Doe", "plan": "premium", "ltv": Decimal("12.50"), "count": 3,
    "joined": date(2023, 1, 15), "seen": datetime(2023, 1, 14, 22, 44, 25),
    "summary": {"genres": ["house", "techno"]}, "blank": "",
}


@pytest.mark.parametrize(
    ("template", "type_", "expected"),
    [
        ("{{ name | split: ' ' | first }}", "auto", "Jane"),
        ("{{ name | upcase }}", "string", "JANE DOE"),
        ("{{ count | times: 2 }}", "number", 6),
        ("{{ ltv | times: 2 }}", "number", 25.0),
        ("{{ count | plus: 0.5 }}", "number", 3.5),
        ("{{ count | times: 10 }}", "integer", 30),
        ("{% if plan == 'premium' %}true{% else %}false{% endif %}", "boolean", True),
        ("{% if plan == 'free' %}yes{% else %}no{% endif %}", "boolean", False),
        ('{"plan": "{{ plan }}", "top": "{{ summary.genres | first }}"}', "json", {"plan": "premium", "top": "house"}),
        ("[{{ count }}, {{ count | plus: 1 }}]", "json", [3, 4]),
        ("{{ joined }}", "string", "2023-01-15"),
        ("{{ blank }}", "number", None),
        ("{{ blank }}", "boolean", None),
        ("{{ blank }}", "json", None),
    ],
)
def test_liquid_field_renders_and_types_its_result(template, type_, expected):
    record = _mapper({"to": "out", "liquid": template, "type": type_}).map_row(ROW)
    assert orjson.loads(record.body)["out"] == expected


@pytest.mark.parametrize(
    ("template", "type_", "reason"),
    [
        ("{{ name }}", "number", "is not a number"),
        ("{{ count | plus: 0.5 }}", "integer", "is not an integer"),
        ("{{ name }}", "boolean", "is not a boolean"),
        ("{{ name }}", "json", "invalid JSON"),
        ("{{ missing_column }}", "string", "Liquid error in field 'out'"),
        ("{{ count | divided_by: 0 }}", "number", "Liquid error in field 'out'"),
    ],
)
def test_liquid_field_that_cannot_render_or_convert_rejects_the_row(template, type_, reason):
    with pytest.raises(RowRejected, match=reason) as error:
        _mapper({"to": "out", "liquid": template, "type": type_}).map_row(ROW)
    assert error.value.pk == "1"


def test_column_field_type_converts_the_column_value():
    mapper = _mapper({"column": "count", "to": "count_text", "type": "string"}, {"column": "ltv", "type": "number"})
    assert orjson.loads(mapper.map_row(ROW).body) == {"id": 1, "count_text": "3", "ltv": 12.5}


def test_column_field_typed_json_parses_text_and_rejects_what_is_not_json():
    mapper = _mapper({"column": "name", "type": "json"})
    assert orjson.loads(mapper.map_row({**ROW, "name": '{"a": 1}'}).body)["name"] == {"a": 1}
    with pytest.raises(RowRejected, match="invalid JSON"):
        mapper.map_row(ROW)


def test_record_over_the_size_limit_is_rejected_with_its_pk():
    mapper = _mapper({"column": "name"}, max_record_bytes=20)
    with pytest.raises(RowRejected, match="over the 20-byte limit") as error:
        mapper.map_row(ROW)
    assert error.value.pk == "1"


def test_null_primary_index_is_rejected():
    with pytest.raises(RowRejected, match="primary index 'id' is null"):
        _mapper({"column": "name"}).map_row({**ROW, "id": None})


def test_value_json_cannot_encode_rejects_the_row_instead_of_failing_the_run():
    with pytest.raises(RowRejected, match="cannot be encoded as JSON"):
        _mapper({"column": "name"}).map_row({**ROW, "name": object()})


DIRECT_SCOPE = {"name": "Ann 😀", "n": 3, "x": 1.5, "ok": True, "none": None, "tags": ["a", "b"],
                "profile": {"plan": "pro", "devices": {"ios": False}, "size": 9}, "quoted": 'say "hi" & <b>'}


@pytest.mark.parametrize("source", [
    "plain text only",
    "Hi {{ name }}, your {{ profile.plan }} plan",
    "{{- name -}} ! {{ n }} {{ x }} {{ ok }} [{{ none }}] {{ tags }} {{ profile.devices.ios }} {{ quoted }}",
    "{{ profile }}",
    '{{ profile["plan"] }}',
])
def test_direct_rendering_of_plain_outputs_equals_liquids(source):
    from orchestration.config.liquid import parse_template
    from orchestration.sync.mapping import direct_renderer

    template = parse_template(source)
    render = direct_renderer(template)
    assert render is not None
    assert render(DIRECT_SCOPE) == template.render(**DIRECT_SCOPE)


@pytest.mark.parametrize("source", ["{{ name | upcase }}", "{{ tags.size }}", "{{ tags[0] }}", "{% if ok %}y{% endif %}",
                                    "{{ profile.size }}"])
def test_templates_with_filters_tags_or_special_properties_are_left_to_liquid(source):
    from orchestration.config.liquid import parse_template
    from orchestration.sync.mapping import direct_renderer

    assert direct_renderer(parse_template(source)) is None


def test_a_value_that_is_not_a_plain_lookup_falls_back_to_liquid_and_its_errors(harness):
    harness.table("people", "id integer, name varchar, prefs json",
                  [(1, "Ann", '{"plan": "pro"}'), (2, "Bob", '{"other": 1}'), (3, "Cy", '["not", "a", "dict"]')])
    harness.configure(sync_config(fields=[
        {"column": "id"}, {"to": "greeting", "liquid": "{{ name }} on {{ prefs.plan }}"},
    ], rejections={"max_share": 1.0}))
    report = harness.run("people")
    assert harness.get("people", "id", 1)["greeting"] == "Ann on pro"
    assert report.counts["rejected"] == 2  # strict Liquid: prefs.plan is undefined for Bob and Cy
    assert {sample["pk"] for sample in report.rejection_samples} == {"2", "3"}
    assert all("Liquid error in field 'greeting'" in sample["reason"] for sample in report.rejection_samples)
