# Two commands do all the set-up:  `make run`  and  `make test`  (see README.md).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test lint bench protos clean

# pip installs uv (pinned in constraints.txt) into the venv, and uv installs the rest: it resolves,
# downloads and installs in parallel and shows what it does, a few times faster than pip.
$(STAMP): pyproject.toml contracts/pyproject.toml constraints.txt
	@echo "==> Setting up $(VENV): the project and its pinned dependencies (constraints.txt)."
	@echo "    The first time this takes a minute or two, mostly downloads; afterwards only when"
	@echo "    pyproject.toml or constraints.txt change."
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check --progress-bar on -c constraints.txt uv
	$(VENV)/bin/uv pip install --python $(PY) --compile-bytecode -c constraints.txt -e ./contracts -e '.[dev,embedded]'
	touch $(STAMP)
	@echo "==> $(VENV) is ready."

# The official openai npm client for tests/gateway/test_openai_node.py, from tests/node's lock file, when npm is here
# (without it, or if the install fails, that one test is skipped and says why).
NODE_STAMP := tests/node/node_modules/.installed
$(NODE_STAMP): tests/node/package.json tests/node/package-lock.json
	@if command -v npm >/dev/null 2>&1; then \
	  npm ci --prefix tests/node --no-audit --no-fund --loglevel=error && touch $(NODE_STAMP) \
	  || echo "==> npm ci in tests/node failed: the openai npm client test will be skipped"; \
	else echo "==> npm not found: the openai npm client test will be skipped"; fi

## Start the schema service (embedded PostgreSQL unless DATABASE_URL is set) and the gateway.
## RUN_FLAGS: scripts/run_local.py's flags (other ports: --gateway-port 50061 ...; see its --help).
RUN_FLAGS ?=
run: $(STAMP)
	$(PY) scripts/run_local.py $(RUN_FLAGS)

## Lint, type-check and run the whole test suite, on TEST_WORKERS pytest-xdist workers (whole files to a
## worker, so a module's servers start once); `pytest tests/...` alone runs in one process. Bytecode is cached
## even where PYTHONDONTWRITEBYTECODE is set: the install compiles site-packages (--compile-bytecode), and pytest
## runs without the variable, so our sources and the rewritten test modules are compiled once, not by every
## worker and every service a test starts (collection alone: 15.0 -> 6.7 CPU s, docs/testing.md).
# Three on two cores: most of a test's wall time is waiting (servers starting, databases created and dropped), so a
# third worker fills it: 3 min 20 s of pytest against 3 min 49 s - 4 min 13 s with two (2026-12-08, idle machine).
TEST_WORKERS ?= 3
test: $(STAMP) $(NODE_STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	env -u PYTHONDONTWRITEBYTECODE $(VENV)/bin/pytest -n $(TEST_WORKERS) --dist loadfile

## Benchmarks (each prints ratios against a baseline measured in the same run, then every target met / NOT met);
## figures and PNGs in .data/bench/. BENCH_FLAGS: --record (into the committed bench/results/), --check (exit 1
## on a missed target), --quick.
BENCH_FLAGS ?=
bench: $(STAMP)
	$(PY) bench/run_all.py $(BENCH_FLAGS)

## Regenerate the committed stubs after a .proto change (then update the buf snapshot on purpose).
protos: $(STAMP)
	$(PY) scripts/gen_protos.py
	$(VENV)/bin/buf build -o contracts/descriptor.binpb

clean:
	rm -rf $(VENV) .data tests/node/node_modules
