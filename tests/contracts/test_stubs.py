"""The committed stubs are exactly what the protos generate."""

from __future__ import annotations

import filecmp
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "contracts" / "src"


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts}


def test_committed_stubs_match_protos(tmp_path: Path) -> None:
    subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_protos.py"), str(tmp_path)], check=True)
    generated, committed = _files(tmp_path), _files(COMMITTED)
    assert generated == committed, "run `make protos`: stub files differ from the protos"
    differing = [n for n in sorted(generated) if not filecmp.cmp(tmp_path / n, COMMITTED / n, shallow=False)]
    assert differing == [], f"run `make protos`: stale generated stubs {differing}"


def test_stubs_import_as_one_package_per_proto_package() -> None:
    from llmgateway.v1 import chat_service_pb2, chat_service_pb2_grpc, provider_service_pb2_grpc
    from schemaservice.v1 import metrics_service_pb2_grpc, migration_service_pb2

    assert chat_service_pb2.DESCRIPTOR.package == "llmgateway.v1"
    assert migration_service_pb2.DESCRIPTOR.package == "schemaservice.v1"
    for module, stub in [
        (chat_service_pb2_grpc, "ChatServiceStub"),
        (provider_service_pb2_grpc, "ProviderServiceStub"),
        (metrics_service_pb2_grpc, "MetricsServiceStub"),
    ]:
        assert hasattr(module, stub)
