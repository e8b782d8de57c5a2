"""Generate the Python stubs in contracts/src from protos/.

Usage: python scripts/gen_protos.py [OUT_DIR]

The stubs are committed; tests/contracts/test_stubs.py regenerates them into a
scratch folder and fails when they differ from the committed ones.
"""

from __future__ import annotations

import sys
from importlib import resources
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
PACKAGES = ("llmgateway", "schemaservice")


def proto_files() -> list[str]:
    return sorted(str(p.relative_to(PROTOS)) for p in PROTOS.rglob("*.proto"))


def generate(out: Path) -> None:
    well_known = str(resources.files("grpc_tools") / "_proto")
    out.mkdir(parents=True, exist_ok=True)
    args = [
        "protoc",
        f"-I{PROTOS}",
        f"-I{well_known}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        *proto_files(),
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    for package in PACKAGES:
        write_descriptor_set(package, well_known, out)
    for package in PACKAGES:
        for folder in [out / package, *(p for p in (out / package).rglob("*") if p.is_dir())]:
            (folder / "__init__.py").touch()
            (folder / "py.typed").touch()


def write_descriptor_set(package: str, well_known: str, out: Path) -> None:
    """Descriptors with comments (source info) for server reflection: the generated _pb2 modules
    drop comments, and `grpcurl describe` is how people read the contracts."""
    files = [f for f in proto_files() if f.startswith(package + "/")]
    target = out / package / "v1" / "descriptor_set.binpb"
    args = [
        "protoc",
        f"-I{PROTOS}",
        f"-I{well_known}",
        "--include_imports",
        "--include_source_info",
        f"--descriptor_set_out={target}",
        *files,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")


if __name__ == "__main__":
    generate(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "contracts" / "src")
