"""The callers file: validation that names the entry, lookups, and reloading when it changes."""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import pytest

from servicekit.callers import MAX_FILE_BYTES, CallersSource, SetupError, load, parse

pytestmark = pytest.mark.timeout(10)

TOKEN = "s3cret-token-value"
HASH = hashlib.sha256(TOKEN.encode()).hexdigest()


def test_tokens_and_subjects_find_their_caller() -> None:
    callers = parse(
        f"""callers:
  - {{name: billing-api, token_sha256: "{HASH}", roles: [chat, providers.read]}}
  - {{name: other, token_sha256: "{"0" * 64}", roles: [chat], limits: {{requests_per_second: 5}}}}
  - {{name: web-frontend, tls_subject: "CN=web-frontend", roles: [chat]}}
""",
        "test",
    )
    found = callers.by_bearer(TOKEN)
    assert found is not None and found.name == "billing-api" and found.roles == ("chat", "providers.read")
    assert callers.by_bearer(TOKEN + "x") is None
    assert callers.by_bearer(HASH) is None  # the hash itself is not a token
    assert callers.by_bearer("") is None
    subject = callers.by_certificate("CN=web-frontend")
    assert subject is not None and subject.name == "web-frontend"
    assert callers.by_certificate("CN=web-frontend,O=x") is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("callers: [{name: a, roles: [chat]}]", "callers[0]: give exactly one of"),
        (f'callers: [{{name: a, token_sha256: "{HASH}", tls_subject: "CN=a", roles: [chat]}}]', "exactly one"),
        (f'callers: [{{name: a, token_sha256: "{HASH}", roles: [chat, admin]}}]', "callers[0].roles[1]"),
        (f'callers: [{{name: a, token_sha256: "{HASH}", roles: []}}]', "callers[0].roles"),
        ('callers: [{name: a, token_sha256: "' + TOKEN + '", roles: [chat]}]', "callers[0].token_sha256"),
        (f'callers: [{{name: a, token_sha256: "{HASH}", roles: [chat], extra: 1}}]', "callers[0].extra"),
        (f'callers: [{{name: "a b", token_sha256: "{HASH}", roles: [chat]}}]', "callers[0].name"),
        (f'callers: [{{name: a, token_sha256: "{HASH}", roles: [chat], limits: {{tokens_per_day: 3}}}}]', "limits"),
        (
            f'callers: [{{name: a, token_sha256: "{HASH}", roles: [chat]}},'
            " {name: a, tls_subject: x, roles: [chat]}]",
            "two callers share a name",
        ),
        ("callers: [", "not valid YAML"),
        ("[]", "(top)"),
    ],
)
def test_a_bad_file_is_refused_naming_the_entry_and_never_echoing_it(text: str, message: str) -> None:
    with pytest.raises(SetupError) as caught:
        parse(text, "callers.yaml")
    assert str(caught.value).startswith("callers.yaml: ")
    assert message in str(caught.value)
    assert TOKEN not in str(caught.value)  # a token pasted where its hash belongs stays out of the message


@pytest.mark.parametrize(
    ("entry", "line"),
    [
        (
            f'{{name: a, token: "{TOKEN}", roles: [chat]}}',
            "callers[0].token: unknown key (allowed: name, token_sha256, tls_subject, roles, limits)",
        ),
        (
            f'{{name: a, token_sha256: "{HASH}", roles: [admin]}}',  # one error, not also "roles: too short"
            "callers[0].roles[0]: must be one of chat, providers.read, metrics.write, metrics.read, metrics.read_all, "
            "migrations.read, migrations.admin, usage.write, usage.read, usage.read_all",
        ),
        (f'{{name: a, token_sha256: "{HASH}"}}', "callers[0].roles: is required"),
        (f'{{name: a, token_sha256: "{HASH}", roles: []}}', "callers[0].roles: must list at least one role"),
        (
            f'{{name: a, token_sha256: "{TOKEN}", roles: [chat]}}',
            "callers[0].token_sha256: must be the SHA-256 of the token as 64 lowercase hex digits (sha256sum), "
            "never the token",
        ),
    ],
)
def test_a_bad_entry_is_one_line_in_the_words_of_the_config_errors(entry: str, line: str) -> None:
    with pytest.raises(SetupError) as caught:
        parse(f"callers: [{entry}]", "callers.yaml")
    assert str(caught.value) == f"callers.yaml: {line}"


def write(path: Path, text: str, mtime_ns: int) -> None:
    path.write_text(text + "\n")
    os.utime(path, ns=(mtime_ns, mtime_ns))


def test_the_file_is_reloaded_when_it_changes_and_a_bad_version_keeps_the_last_good(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "callers.yaml"
    write(path, f'callers: [{{name: first, token_sha256: "{HASH}", roles: [chat]}}]', 1_000_000_000)
    source = CallersSource(path, check_interval_s=0)
    assert source.current().by_bearer(TOKEN).name == "first"  # type: ignore[union-attr]
    write(path, f'callers: [{{name: second, token_sha256: "{HASH}", roles: [chat]}}]', 2_000_000_000)
    assert source.current().by_bearer(TOKEN).name == "second"  # type: ignore[union-attr]
    with caplog.at_level(logging.INFO, logger="servicekit.callers"):
        write(path, "callers: [{name: broken}]", 3_000_000_000)
        assert source.current().by_bearer(TOKEN).name == "second"  # type: ignore[union-attr]
        assert source.current().by_bearer(TOKEN).name == "second"  # type: ignore[union-attr]
        path.unlink()
        assert source.current().by_bearer(TOKEN).name == "second"  # type: ignore[union-attr]
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 2  # the broken version once, not at every check; then the missing file
    write(path, f'callers: [{{name: third, token_sha256: "{HASH}", roles: [chat]}}]', 4_000_000_000)
    assert source.current().by_bearer(TOKEN).name == "third"  # type: ignore[union-attr]


def test_changes_are_looked_for_at_most_once_per_interval(tmp_path: Path) -> None:
    path = tmp_path / "callers.yaml"
    write(path, f'callers: [{{name: first, token_sha256: "{HASH}", roles: [chat]}}]', 1_000_000_000)
    source = CallersSource(path, check_interval_s=3600)
    write(path, f'callers: [{{name: second, token_sha256: "{HASH}", roles: [chat]}}]', 2_000_000_000)
    assert source.current().by_bearer(TOKEN).name == "first"  # type: ignore[union-attr]


def test_a_missing_file_stops_the_start(tmp_path: Path) -> None:
    with pytest.raises(SetupError, match="No such file"):
        CallersSource(tmp_path / "absent.yaml")


def test_a_file_cut_short_is_not_taken(tmp_path: Path) -> None:
    """A file caught half-written still parses when the cut falls inside a value: it must not be loaded."""
    path = tmp_path / "callers.yaml"
    whole = "callers:\n  - name: web\n    roles: [chat, migrations.admin]\n    tls_subject: CN=web-frontend\n"
    path.write_text(whole)
    source = CallersSource(path, check_interval_s=0)
    path.write_text(whole[: -len("-frontend\n")])  # the same file, written again, caught half-way
    assert source.current().by_certificate("CN=web") is None
    assert source.current().by_certificate("CN=web-frontend") is not None  # the last complete version stays
    with pytest.raises(SetupError, match="does not end with a newline"):
        load(path)


def test_a_fifo_at_the_callers_path_is_refused_without_waiting_for_a_writer(tmp_path: Path) -> None:
    path = tmp_path / "callers.yaml"
    os.mkfifo(path)
    with pytest.raises(SetupError, match="not a regular file"):
        CallersSource(path)


async def test_a_reload_reads_the_file_off_the_event_loop(tmp_path: Path) -> None:
    path = tmp_path / "callers.yaml"
    write(path, f'callers: [{{name: first, token_sha256: "{HASH}", roles: [chat]}}]', 1_000_000_000)
    source = CallersSource(path, check_interval_s=0)
    path.unlink()
    os.mkfifo(path)  # read on the loop, a FIFO without a writer froze the whole server
    assert source.current().by_bearer(TOKEN).name == "first"  # type: ignore[union-attr]
    assert source.checking is not None
    await source.checking  # the worker thread refused the FIFO
    assert source.current().by_bearer(TOKEN).name == "first"  # type: ignore[union-attr]


def test_a_file_over_the_size_limit_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "callers.yaml"
    path.write_text("callers: []\n" + "#" * MAX_FILE_BYTES + "\n")
    with pytest.raises(SetupError, match="more than"):
        load(path)
