"""The field templates' fast path: a template of text and plain `{{ path }}` outputs is rendered by
looking the values up, with the output Liquid would give; anything else is left to Liquid."""

from __future__ import annotations

import pytest

from orchestration.config.liquid import direct_renderer, parse_template

SCOPE = {"name": "Ann", "n": 3, "profile": {"plan": "pro", "devices": {"ios": False}}, "tags": ["a", "b"]}


@pytest.mark.parametrize("source", [
    "{{ profile }} and its plan {{ profile.plan }}",
    "{{ profile.plan }} first, then {{ profile }}",
    "{{ 'literal' }} beside {{ name }}",
    "{{ name }}{{ name }} twice",
    "line\n  {{- n }}\n\tend",
    "{{ profile.devices.ios }} [{{ tags }}]",
])
def test_plain_outputs_render_directly_as_liquid_renders_them(source):
    template = parse_template(source)

    render = direct_renderer(template)

    assert render is not None
    assert render(SCOPE) == template.render(**SCOPE)


@pytest.mark.parametrize("source", [
    "{{ name | downcase }}",
    "{% for tag in tags %}{{ tag }}{% endfor %}",
    "{{ tags.first }}",
    "{{ tags[1] }}",
    "{{ (1..n) }}",
    "text with a \x000\x00 in it {{ n }}",  # the marker the fast path looks for: never mistaken for an output
])
def test_anything_but_plain_outputs_is_left_to_liquid(source):
    assert direct_renderer(parse_template(source)) is None


def test_a_value_that_is_not_a_plain_lookup_is_left_to_liquid_for_that_row():
    render = direct_renderer(parse_template("{{ profile.plan }}"))

    assert render({"profile": {"plan": "pro"}}) == "pro"
    assert render({"profile": ["not", "a", "mapping"]}) is None
    assert render({}) is None
