"""The README's command reference is generated from the parser: it lists every command and option, and is current."""

from __future__ import annotations

import argparse

from orchestration.cli import _parser
from orchestration.cli_reference import _commands, cli_reference, readme_block


def test_the_readme_command_reference_is_the_one_the_parser_generates():
    assert readme_block() == cli_reference(), "README.md's command reference is stale: run `make docs`"


def test_the_reference_names_every_command_and_every_option():
    parser = _parser()
    reference = cli_reference(parser)
    for path, command, _ in [(("larder",), parser, ""), *_commands(parser, ("larder",))]:
        assert f"### `{' '.join(path)}`" in reference
        for action in command._actions:
            if action.option_strings and not isinstance(action, argparse._HelpAction):
                assert max(action.option_strings, key=len) in reference, (path, action.option_strings)


def test_a_changed_option_makes_the_reference_differ():
    parser = _parser()
    before = cli_reference(parser)
    parser.add_argument("--verbose", action="store_true", help="say more")

    assert cli_reference(parser) != before
    assert "`--verbose` | say more" in cli_reference(parser)
