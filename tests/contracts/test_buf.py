"""`buf lint` (STANDARD + COMMENTS) and `buf breaking` against the committed descriptor snapshot."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SNAPSHOT = ROOT / "contracts" / "descriptor.binpb"


def _buf() -> str:
    path = Path(sys.executable).parent / "buf"
    found = str(path) if path.exists() else shutil.which("buf")
    if found is None:
        pytest.fail("buf not installed: it ships with the dev extra (buf-bin)")
    return found


def _run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([_buf(), *args], cwd=cwd, capture_output=True, text=True, timeout=60)


def test_buf_lint_passes() -> None:
    result = _run("lint")
    assert result.returncode == 0, result.stdout + result.stderr


def test_buf_breaking_against_snapshot() -> None:
    result = _run("breaking", "--against", str(SNAPSHOT))
    assert result.returncode == 0, (
        "contract change breaks callers; if intended, update the snapshot on purpose with `make protos`:\n"
        + result.stdout
        + result.stderr
    )


def test_buf_breaking_detects_a_removed_field(tmp_path: Path) -> None:
    """The breaking check can fail: a copy of the protos with a field deleted is refused."""
    shutil.copytree(ROOT / "protos", tmp_path / "protos")
    shutil.copy(ROOT / "buf.yaml", tmp_path / "buf.yaml")
    proto = tmp_path / "protos" / "schemaservice" / "v1" / "metrics_service.proto"
    text = proto.read_text()
    assert "  string unit = 3;\n" in text
    proto.write_text(text.replace("  string unit = 3;\n", ""))
    result = _run("breaking", "--against", str(SNAPSHOT), cwd=tmp_path)
    assert result.returncode != 0
    assert "unit" in result.stdout + result.stderr


def test_buf_lint_detects_a_missing_comment(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "protos", tmp_path / "protos")
    shutil.copy(ROOT / "buf.yaml", tmp_path / "buf.yaml")
    proto = tmp_path / "protos" / "llmgateway" / "v1" / "provider_service.proto"
    proto.write_text(proto.read_text().replace("  // Unique name used in routes and provider_order.\n", ""))
    result = _run("lint", cwd=tmp_path)
    assert result.returncode != 0
    assert "comment" in result.stdout + result.stderr
