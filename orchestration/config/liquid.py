"""The one Liquid environment Larder renders field templates with."""

from __future__ import annotations

from liquid import Environment, StrictUndefined
from liquid.exceptions import LiquidError, LiquidSyntaxError

__all__ = ["LIQUID", "LiquidError", "LiquidSyntaxError", "parse_template"]

# Strict: a template that reads a column the row does not have is an error, not an empty string.
LIQUID = Environment(undefined=StrictUndefined)


def parse_template(source: str):
    """Parse once; raises LiquidSyntaxError with the position of the problem."""
    return LIQUID.from_string(source)
