"""`--help` of both services and every subcommand: each flag says what it does and, when it takes a value, its
default; a flag or setting it refers to is one this command has (no `see file_format` where the flag is
`--format`, no `--embedded` where the command does not take it)."""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterator

import pytest

from gateway_service.__main__ import build_parser as gateway_parser
from schema_service.__main__ import build_parser as schema_parser
from schema_service.config import MetricsSettings, MigrationSettings, Settings, UsageSettings
from servicekit.security import Security

FIELDS = {
    name
    for model in (Settings, MigrationSettings, MetricsSettings, UsageSettings, Security)
    for name in model.model_fields
}


def commands() -> Iterator[tuple[str, argparse.ArgumentParser]]:
    for top in (gateway_parser(), schema_parser()):
        yield top.prog, top
        for action in top._actions:
            if isinstance(action, argparse._SubParsersAction):
                yield from ((p.prog, p) for p in action.choices.values())


COMMANDS = dict(commands())


def options(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in parser._actions if a.option_strings and a.dest != "help"]


@pytest.mark.parametrize("prog", COMMANDS)
def test_every_flag_is_documented_with_its_default(prog: str) -> None:
    for action in options(COMMANDS[prog]):
        flag, text = action.option_strings[-1], action.help or ""
        assert len(text) > 10, f"{prog} {flag}: no help"
        filtering = text.startswith("only ") or (action.default == [] and "none gives" in text)  # none: no filter
        if action.nargs != 0 and not action.required and not filtering:
            assert "default" in text, f"{prog} {flag}: takes a value but says no default: {text!r}"
        # --help prints no sections: "below" points nowhere
        assert not re.search(r"\b(below|above)\b", text), f"{prog} {flag}: {text!r}"


@pytest.mark.parametrize("prog", COMMANDS)
def test_the_help_refers_only_to_flags_this_command_has(prog: str) -> None:
    parser = COMMANDS[prog]
    flags = {s for a in parser._actions for s in a.option_strings}
    texts = [parser.description or "", *(a.help or "" for a in options(parser))]
    for text in texts:
        for flag in re.findall(r"(?<![\w-])--[a-z][a-z-]+", text):
            assert flag in flags, f"{prog}: help names {flag}, which {prog} does not take: {text!r}"
        # a setting's field name where a person needs its flag (`see file_format`, `within lock_wait_s`)
        named = {w for w in re.findall(r"\b[a-z]+_[a-z_]+\b", text) if w in FIELDS}
        assert not named, f"{prog}: help names the setting(s) {named} instead of a flag: {text!r}"


def test_the_description_lists_every_subcommand() -> None:
    parser = COMMANDS["schema-service"]
    subcommands = [p.prog.split()[-1] for prog, p in COMMANDS.items() if prog.startswith("schema-service ")]
    for name in subcommands:
        assert f"`{name}`" in (parser.description or ""), name
