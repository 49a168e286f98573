# OnDijon: `make demo` runs a local city, `make test` runs every check CI runs.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# What `make demo` needs: the project and its runtime dependencies, not the dev/test toolset.
DEMO_STAMP := $(VENV)/.demo-installed
DEMO_DEPS := $(if $(wildcard $(STAMP)),$(STAMP),$(DEMO_STAMP))
# MicroPython's WebAssembly port, for the field-bus node's checks (package-lock.json).
NPM_STAMP := node_modules/.installed

.PHONY: demo dist test lint typecheck protos protos-check proto-lint pytest bench hil bench-hil clean console-assets console-outlines

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

$(NPM_STAMP): package.json package-lock.json
	@if command -v npm >/dev/null; then \
	  npm ci --no-audit --no-fund --loglevel=error && touch $@; \
	else echo "npm not found: the MicroPython checks of edge/node will skip (CI installs it)"; fi

$(DEMO_STAMP): pyproject.toml
	@echo "make demo: creating $(VENV) with $$($(PYTHON) --version)"
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "make demo: installing OnDijon and what it runs on (grpcio, cryptography, SQLAlchemy,"
	@echo "           gpiozero, ...), not the test toolset; pip says each package as it goes"
	$(BIN)/pip install --disable-pip-version-check --progress-bar off -e .
	@touch $@

demo: $(DEMO_DEPS)
	@echo "make demo: starting a local city in demo-run/ (Ctrl-C stops everything)"
	$(BIN)/ondijon demo

# The wheel the deploy steps install (README), in dist/.
dist: $(DEMO_DEPS)
	rm -rf dist
	$(BIN)/pip wheel --disable-pip-version-check --no-deps --wheel-dir dist .
	@ls dist/*.whl

test: lint typecheck protos-check proto-lint pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy

protos: $(STAMP)
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python -m protos.generate

protos-check: $(STAMP)
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python -m protos.generate --check

# Lint the wire contract, and refuse breaking changes against the previous commit.
proto-lint: $(STAMP)
	$(BIN)/buf lint
	@if git rev-parse --verify --quiet HEAD~1 >/dev/null && \
	    git cat-file -e HEAD~1:buf.yaml 2>/dev/null; then \
	  $(BIN)/buf breaking --against '.git#ref=HEAD~1'; \
	else echo "buf breaking: no previous commit with buf.yaml to compare against"; fi

pytest: $(STAMP) $(NPM_STAMP)
	GPIOZERO_PIN_FACTORY=mock $(BIN)/pytest -q

# The web console's front-end libraries, from node_modules (package-lock.json) into the
# package (shipped in the wheel); tests/console/test_assets.py checks they are current.
console-assets: $(STAMP) $(NPM_STAMP)
	$(BIN)/python -m orchestrator.console.assets

# The map's approximate commune outlines (replace the file with the real ones if you have them).
console-outlines: $(STAMP)
	$(BIN)/python -m orchestrator.console.outlines

# The integrators' bench (hil_tests): simulated pins unless GPIOZERO_PIN_FACTORY names a
# hardware factory; ONDIJON_BENCH names the inventory. Every scenario in its long form
# (ONDIJON_LONG=1: a whole night, a simulated day without link); the report (JSON, text,
# HTML with the pins' timelines) and JUnit XML for CI go to $(BENCH_REPORT)/.
# `make test` runs the quick forms of the same scenarios.
BENCH_REPORT ?= hil-report
hil: $(STAMP)
	ONDIJON_LONG=$${ONDIJON_LONG:-1} GPIOZERO_PIN_FACTORY=$${GPIOZERO_PIN_FACTORY:-mock} \
	  $(BIN)/pytest -q -rs -p no:cacheprovider hil_tests \
	  --bench-report=$(BENCH_REPORT) --junitxml=$(BENCH_REPORT)/junit.xml

bench-hil: hil

bench: $(STAMP)
	$(BIN)/python bench/link_bench.py

clean:
	rm -rf $(VENV) node_modules demo-run dist .pytest_cache .mypy_cache .ruff_cache
