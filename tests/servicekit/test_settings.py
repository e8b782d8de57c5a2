"""servicekit.settings: flags built from a model, flag over variable over default, one line per bad setting."""

from __future__ import annotations

import argparse

import pytest
from pydantic import Field

from servicekit.settings import FLAG_USERS, ServiceSettings, SettingsError, add_flags, build, setting


class Example(ServiceSettings):
    """A service with one required setting, one with a default, and a switch."""

    model_config = {"env_prefix": "EXAMPLE_"}

    database_url: str = setting(flag="--database-url", env="DATABASE_URL", metavar="URL")
    """Where the data is."""
    port: int = setting(8000, flag="--port", ge=0, le=65535)
    """Listen port."""
    migrate: bool = setting(True, flag="--no-migrate", const=False)
    """Migrate at start."""
    window: int = Field(5, gt=0)
    """Environment only."""


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="example")
    add_flags(parser, Example)
    return parser.parse_args(argv)


def test_a_missing_required_setting_is_named_by_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    with pytest.raises(SettingsError) as error:
        build(Example, parse())
    assert str(error.value) == "Config 'DATABASE_URL' is missing (or pass --database-url)"


def test_flag_over_variable_over_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://env/db")
    monkeypatch.setenv("EXAMPLE_PORT", "9000")
    monkeypatch.setenv("EXAMPLE_WINDOW", "")  # empty: unset
    settings = build(Example, parse("--no-migrate"))
    assert (settings.database_url, settings.port, settings.migrate, settings.window) == (
        "postgresql://env/db",
        9000,
        False,
        5,
    )
    assert build(Example, parse("--port", "1", "--database-url", "postgresql://flag/db")).port == 1
    assert FLAG_USERS["--no-migrate"] >= {"example"}


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        (("--port", "x"), {}, "Config 'port' (--port, env EXAMPLE_PORT) must be an integer, got 'x'"),
        (
            (),
            {"EXAMPLE_PORT": "-1"},
            "Config 'port' (--port, env EXAMPLE_PORT) must be a non-negative number, got '-1'",
        ),
        ((), {"EXAMPLE_WINDOW": "0"}, "Config 'window' (env EXAMPLE_WINDOW) must be greater than 0, got '0'"),
    ],
)
def test_a_bad_value_names_the_setting_its_flag_and_its_variable(
    monkeypatch: pytest.MonkeyPatch, argv: tuple[str, ...], env: dict[str, str], message: str
) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://env/db")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as error:
        build(Example, parse(*argv))
    assert str(error.value) == message


def test_the_help_shows_the_meaning_variable_and_default() -> None:
    parser = argparse.ArgumentParser(prog="example")
    add_flags(parser, Example)
    text = parser.format_help()
    assert "Listen port. (env EXAMPLE_PORT; default 8000)" in text
    assert "Where the data is. (env DATABASE_URL; default required)" in text


def test_the_log_level_is_checked_and_any_case_will_do(monkeypatch: pytest.MonkeyPatch) -> None:
    from servicekit.settings import LogSettings

    monkeypatch.setenv("LOG_LEVEL", "debug")
    assert build(LogSettings).log_level == "DEBUG"
    with pytest.raises(SettingsError) as error:
        build(LogSettings, log_level="LOUD")
    assert str(error.value) == (
        "Config 'log_level' (--log-level, env LOG_LEVEL) must be one of DEBUG, INFO, WARNING, "
        "ERROR, CRITICAL, got 'LOUD'"
    )


class Section(ServiceSettings):
    """A nested section with its own prefix and flag."""

    model_config = {"env_prefix": "SECTION_"}

    depth: int = setting(3, flag="--depth", gt=0)
    """Depth."""


class WithSection(Example):
    section: Section = Field(default_factory=Section)
    """The section, built from the same command line."""


def test_from_command_line_builds_the_sections_from_the_same_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    from servicekit.settings import from_command_line

    monkeypatch.setenv("DATABASE_URL", "postgresql://env/db")
    parser = argparse.ArgumentParser(prog="example")
    add_flags(parser, WithSection)
    add_flags(parser, Section)
    assert from_command_line(WithSection, parser.parse_args(["--depth", "7"])).section.depth == 7
    monkeypatch.setenv("SECTION_DEPTH", "5")
    assert from_command_line(WithSection, parser.parse_args([])).section.depth == 5
    assert from_command_line(WithSection, parser.parse_args(["--depth", "7"])).section.depth == 7
    with pytest.raises(SettingsError, match=r"^Config 'depth' \(--depth, env SECTION_DEPTH\) must be greater than 0"):
        from_command_line(WithSection, parser.parse_args(["--depth", "0"]))


def test_only_a_fields_own_flag_sets_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """`window` has no flag: another command's argument of that name does not set it."""
    monkeypatch.setenv("DATABASE_URL", "postgresql://env/db")
    assert build(Example, argparse.Namespace(window=99, port="7")).window == 5
