"""The callers file: validation that names the entry, lookups, and reloading when it changes."""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import pytest
import yaml

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
    path.write_text(text + "\n...\n")
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


WHOLE = (
    "callers:\n"
    "  - name: web\n"
    "    roles: [chat, migrations.admin]\n"
    "    tls_subject: CN=web-frontend\n"
    "  - name: batch\n"
    f'    token_sha256: "{HASH}"\n'
    "    roles: [chat]\n"
    "    limits:\n"
    "      requests_per_minute: 10\n"
    "...\n"
)


@pytest.mark.parametrize(
    "cut",
    [
        pytest.param(WHOLE[: WHOLE.index("-frontend")], id="inside-a-value"),
        pytest.param(WHOLE[: WHOLE.index("  - name: batch")], id="before-an-entry"),
        pytest.param(WHOLE[: WHOLE.index("    limits:")], id="before-a-callers-limits"),
        pytest.param(WHOLE[: -len("...\n")], id="before-the-end-marker"),
        pytest.param(WHOLE[:-2], id="inside-the-end-marker"),
    ],
)
def test_a_file_cut_short_is_not_taken(tmp_path: Path, cut: str, caplog: pytest.LogCaptureFixture) -> None:
    """A file caught half-written (or left so) may still parse into the schema wherever the cut falls, inside a
    value or at a line break: without the writer's last line, `...`, it is refused, and a reload keeps the
    version before it."""
    path = tmp_path / "callers.yaml"
    path.write_text(WHOLE)
    source = CallersSource(path, check_interval_s=0)
    with caplog.at_level(logging.INFO, logger="servicekit.callers"):
        path.write_text(cut)  # the same file, written again, caught half-way
        batch = source.current().by_bearer(TOKEN)
    assert batch is not None and batch.limits == {"requests_per_minute": 10}  # the last complete version stays
    assert source.current().by_certificate("CN=web") is None
    assert source.current().by_certificate("CN=web-frontend") is not None
    [refused] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert refused.getMessage() == "callers file not reloaded; the previous one stays in force"
    with pytest.raises(SetupError) as caught:
        load(path)  # at start, the same file stops the server
    assert refused.error == str(caught.value)


def test_a_file_that_parses_without_its_end_marker_is_refused_and_says_what_to_add(tmp_path: Path) -> None:
    path = tmp_path / "callers.yaml"
    path.write_text(WHOLE.removesuffix("...\n"))
    with pytest.raises(SetupError) as caught:
        load(path)
    assert str(caught.value) == (
        f"callers file {path}: does not end with the line '...' (YAML's end of document), so it may be cut "
        "short (written half-way?); end the file with that line"
    )


@pytest.mark.parametrize("tail", ["...", "...\n# rotated by ops\n", "...\n\n"])
def test_the_end_marker_may_close_the_file_without_a_newline_or_before_comments(tmp_path: Path, tail: str) -> None:
    path = tmp_path / "callers.yaml"
    path.write_text(WHOLE.removesuffix("...\n") + tail)
    assert load(path).by_bearer(TOKEN) is not None


def test_yaml_dump_writes_the_end_marker_with_explicit_end(tmp_path: Path) -> None:
    path = tmp_path / "callers.yaml"
    entry = {"name": "batch", "token_sha256": HASH, "roles": ["chat"]}
    path.write_text(yaml.safe_dump({"callers": [entry]}, explicit_end=True))
    assert load(path).by_bearer(TOKEN) is not None


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
