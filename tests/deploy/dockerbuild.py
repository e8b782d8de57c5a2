"""deploy/Dockerfile's build steps, run without a Docker daemon (none runs here).

The Dockerfile is read with `dockerfile-parse`; the build context is what `docker build` would send
(docker-py's own .dockerignore matcher); each stage's filesystem is a folder, its Python a fresh
virtualenv of this machine's Python (the image's minor version: test_image.py checks), and every
absolute path a RUN step names (its WORKDIR, a COPY target, a `--mount` target) is that path under the
stage's folder. RUN steps must be single commands (no shell operators), so they run as they are
written, with `python` being the stage's own.

What is not emulated is said where it is skipped: ENV, USER, EXPOSE, ENTRYPOINT and CMD are run-time
settings, not build steps; the tests check them on the parsed file instead.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import docker.utils
from dockerfile_parse import DockerfileParser

RUNTIME_SETTINGS = {"ENV", "USER", "EXPOSE", "ENTRYPOINT", "CMD", "LABEL", "COMMENT"}
SHELL_OPERATORS = {"&&", "||", ";", "|", ">", "<", "&"}


@dataclass
class Stage:
    name: str
    base: str
    root: Path
    workdir: str = "/"
    runs: list[list[str]] = field(default_factory=list)

    def host(self, path: str) -> Path:
        """Where a path of the stage's filesystem lies on this machine."""
        return self.root / os.path.normpath(os.path.join(self.workdir, path)).lstrip("/")

    @property
    def python(self) -> Path:
        return self.root / "python" / "bin" / "python"


def instructions(dockerfile: Path) -> list[dict[str, Any]]:
    structure: list[dict[str, Any]] = DockerfileParser(path=str(dockerfile)).structure
    return structure


def context_files(context: Path) -> list[str]:
    """The files `docker build` sends: everything .dockerignore lets through."""
    patterns = (context / ".dockerignore").read_text().splitlines()
    return sorted(p for p in docker.utils.exclude_paths(str(context), patterns) if (context / p).is_file())


def build(dockerfile: Path, context: Path, scratch: Path, env: dict[str, str]) -> list[Stage]:
    """Run every build step in order; the last stage's virtualenv is the image's Python."""
    stages: list[Stage] = []
    for step in instructions(dockerfile):
        kind, value = step["instruction"], step["value"]
        if kind == "FROM":
            base, _, name = value.partition(" AS ")
            stage = Stage(name=name.strip() or str(len(stages)), base=base.strip(), root=scratch / str(len(stages)))
            stage.root.mkdir(parents=True)
            subprocess.run([sys.executable, "-m", "venv", str(stage.root / "python")], check=True, timeout=120)
            stages.append(stage)
        elif kind == "WORKDIR":
            stages[-1].workdir = value
            stages[-1].host(".").mkdir(parents=True, exist_ok=True)
        elif kind == "COPY":
            copy(stages[-1], value.split(), context)
        elif kind == "RUN":
            run(stages, value, env)
        elif kind not in RUNTIME_SETTINGS:
            raise AssertionError(f"the emulation does not know {kind} {value}: teach it, or keep it out")
    return stages


def copy(stage: Stage, args: list[str], context: Path) -> None:
    *sources, target = args
    if any(a.startswith("--") for a in sources):
        raise AssertionError(f"COPY {' '.join(args)}: only plain copies from the build context are emulated")
    files = context_files(context)
    for source in sources:
        wanted = source.rstrip("/")
        chosen = [f for f in files if f == wanted or f.startswith(wanted + "/")]
        if not chosen:
            raise AssertionError(f"COPY {source}: nothing in the build context (.dockerignore?)")
        for name in chosen:
            inside = name[len(wanted) :].lstrip("/") if source.endswith("/") else Path(name).name
            destination = stage.host(os.path.join(target, inside))
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(context / name, destination)


def run(stages: list[Stage], value: str, env: dict[str, str]) -> None:
    stage = stages[-1]
    words = shlex.split(value)
    mounts = {}
    while words and words[0].startswith("--"):
        flag = words.pop(0)
        if not flag.startswith("--mount="):
            raise AssertionError(f"RUN {flag}: not emulated")
        options = dict(option.split("=", 1) for option in flag.removeprefix("--mount=").split(","))
        if options.get("type") != "bind" or "from" not in options:
            raise AssertionError(f"RUN {flag}: only bind mounts from an earlier stage are emulated")
        [source_stage] = [s for s in stages if s.name == options["from"]]
        mounts[options["target"]] = source_stage.host(options["source"])
    if SHELL_OPERATORS & set(words):
        raise AssertionError(f"RUN {value}: one command per RUN, so that it runs here as written")
    if words[0] != "python":
        raise AssertionError(f"RUN {value}: only the stage's python is available here")
    for target, source in mounts.items():
        stage.host(target).parent.mkdir(parents=True, exist_ok=True)
        stage.host(target).symlink_to(source, target_is_directory=True)
    command = [str(stage.python), *(str(stage.host(w)) if w.startswith("/") else w for w in words[1:])]
    stage.runs.append(command)
    done = subprocess.run(command, cwd=stage.host("."), env=env, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise AssertionError(f"RUN {value} failed ({done.returncode}):\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}")


def main() -> None:
    """`python -m tests.deploy.dockerbuild DOCKERFILE CONTEXT SCRATCH`: build, then print the stages as JSON."""
    parser = argparse.ArgumentParser()
    for name in ("dockerfile", "context", "scratch"):
        parser.add_argument(name, type=Path)
    args = parser.parse_args()
    stages = build(args.dockerfile, args.context, args.scratch, dict(os.environ))
    print(json.dumps([asdict(s) | {"root": str(s.root)} for s in stages]))


def load(text: str) -> list[Stage]:
    return [Stage(**(s | {"root": Path(s["root"])})) for s in json.loads(text)]


if __name__ == "__main__":
    main()
