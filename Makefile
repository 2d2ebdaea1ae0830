# Two commands do all the set-up: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat requirements.lock pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: demo test lint typecheck chaos hostile soak lock clean

$(STAMP): requirements.lock pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --require-hashes --no-deps -r requirements.lock
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps -e .
	@rm -f $(VENV)/.installed-*
	@touch $@

demo: $(STAMP)
	$(BIN)/moderation-worker local

lint: $(STAMP)
	$(BIN)/ruff check worker tests
	$(BIN)/ruff format --check worker tests

typecheck: $(STAMP)
	$(BIN)/mypy --strict worker tests

# Two processes: most tests wait on local servers and subprocesses, so this halves the wall time.
# Whole files stay on one process, since the chaos modules share one scenario per file.
test: lint typecheck
	$(BIN)/pytest -n 2 --dist loadfile

# The long fault-injection run (real worker processes, thousands of messages, a few minutes):
# prints the figures and rewrites their section of docs/reliability.md. `make test` runs the
# bounded version (tests/chaos).
CHAOS_ARGS ?= --messages 3000 --workers 2 --kills 2 --outage-seconds 5 --seed 7
chaos: $(STAMP)
	$(BIN)/python -m worker.chaos $(CHAOS_ARGS) --write docs/reliability.md

# Issue 6's hostile run against one real worker (hostile whitespace, an endpoint "not found" for
# 10 s, an oversized message; a few minutes): prints the figures, rewrites their section of
# docs/reliability.md, and fails when the run misses the bar.
HOSTILE_ARGS ?=
hostile: $(STAMP)
	$(BIN)/python -m worker.chaos.hostile $(HOSTILE_ARGS) --write docs/reliability.md

# The memory soak: one real worker through SOAK_MESSAGES messages, its RSS sampled as it goes;
# writes the figures to docs/reliability.md and fails when RSS grows past the bar.
SOAK_ARGS ?= --messages 50000
soak: $(STAMP)
	$(BIN)/python -m worker.chaos.soak $(SOAK_ARGS) --write docs/reliability.md

# Regenerate the lock after changing dependencies in pyproject.toml.
lock: $(STAMP)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check "uv==0.13.8"
	$(BIN)/python -m uv pip compile pyproject.toml --extra local --extra dev --universal \
		--python-version 3.11 --generate-hashes -o requirements.lock

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
