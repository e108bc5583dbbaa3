"""The one Liquid environment Larder renders field templates with."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from liquid import Environment, StrictUndefined
from liquid.exceptions import LiquidError, LiquidSyntaxError
from liquid.stringify import to_liquid_string

__all__ = ["LIQUID", "LiquidError", "LiquidSyntaxError", "direct_renderer", "parse_template"]

# Strict: a template that reads a column the row does not have is an error, not an empty string.
LIQUID = Environment(undefined=StrictUndefined)


def parse_template(source: str):
    """Parse once; raises LiquidSyntaxError with the position of the problem."""
    return LIQUID.from_string(source)


# Path segments Liquid resolves specially (`list.size`, `list.first`...): left to Liquid itself.
_SPECIAL_PROPERTIES = frozenset({"size", "first", "last"})
# What stands for a path's value in the one render `direct_renderer` makes to find the template's text.
_MARKER = re.compile("\x00([0-9]+)\x00")


def direct_renderer(template) -> Callable[[dict[str, Any]], str | None] | None:
    """For a template made only of text and `{{ column.key }}` outputs (no filters, tags or
    special properties), a renderer that looks the values up itself: a Liquid render context per
    row costs ten times more. It returns None when a value is not a plain dictionary lookup, and
    the caller renders the template with Liquid (same output, same errors). None if the template
    has anything else in it."""
    analysis = template.analyze()
    if analysis.filters or analysis.tags:
        return None
    occurrences = sorted((v for found in analysis.variables.values() for v in found), key=lambda v: v.span.index)
    paths = [tuple(v.segments) for v in occurrences]
    if not all(isinstance(s, str) for path in paths for s in path) or any(
            _SPECIAL_PROPERTIES.intersection(path[1:]) for path in paths):
        return None
    parts = _text_and_paths(template, paths)
    if parts is None:
        return None
    autoescape = template.env.autoescape

    def render(scope: dict[str, Any]) -> str | None:
        out = []
        for part in parts:
            if isinstance(part, str):
                out.append(part)
                continue
            value: Any = scope
            for segment in part:
                if not isinstance(value, dict) or segment not in value:
                    return None
                value = value[segment]
            out.append(to_liquid_string(value, autoescape))
        return "".join(out)

    return render


def _text_and_paths(template, paths: list[tuple[str, ...]]) -> list[str | tuple[str, ...]] | None:
    """The template as its text between outputs and the path each output prints, in order: found by
    rendering it once with a marker standing for each path's value. None unless the outputs printed
    exactly the paths' markers, in order (an output that is not a plain path prints something else)."""
    distinct = list(dict.fromkeys(paths))
    scope = _Marked()
    for number, path in enumerate(distinct):
        node = scope
        for segment in path:
            node = node.setdefault(segment, _Marked())
        node.marker = f"\x00{number}\x00"
    try:
        pieces = _MARKER.split(template.render(**scope))
    except LiquidError:
        return None
    if [distinct[int(number)] for number in pieces[1::2]] != paths:
        return None
    return [piece if i % 2 == 0 else distinct[int(piece)] for i, piece in enumerate(pieces) if i % 2 or piece]


class _Marked(dict):
    """A value a path leads through (a dict) that prints as the marker of the path ending at it."""

    marker = ""

    def __str__(self) -> str:
        return self.marker
