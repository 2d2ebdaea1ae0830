# Two commands do all the set-up: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat requirements.lock pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: demo test coverage-html mutate lint typecheck checkov chaos hostile soak bench bench-short \
	localstack lock schemas clean image image-base image-standin

$(STAMP): requirements.lock pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --require-hashes --no-deps -r requirements.lock
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps -e .
	@rm -f $(VENV)/.installed-*
	@touch $@

demo: $(STAMP)
	$(BIN)/moderation-worker local

lint: $(STAMP)
	$(BIN)/ruff check worker devstack tests bench tools
	$(BIN)/ruff format --check worker devstack tests bench tools

typecheck: $(STAMP)
	$(BIN)/mypy --strict worker devstack tests bench tools

# Two processes: most tests wait on local servers and subprocesses, so this halves the wall time.
# Whole files stay on one process, since the chaos modules share one scenario per file.
# PYTHONPATH: bench/ is not installed (it is no part of the worker's distribution), and its smoke
# tests (tests/bench) import it from the work tree; run them alone the same way.
# Branch coverage of worker/ is measured on the way (pytest-cov combines both processes' data);
# then the delivery-critical modules must each reach the floor in tools/coverage_floor.py.
# pytest-randomly shuffles the order on every run and prints the seed ("Using --randomly-seed=N");
# replay an order with PYTEST_ADDOPTS="-p randomly --randomly-seed=N" make test.
test: lint typecheck checkov
	@rm -f .coverage .coverage.*
	PYTHONPATH=$(CURDIR) $(BIN)/pytest -n 2 --dist loadfile --cov --cov-report=
	@mkdir -p build
	$(BIN)/coverage json -q -o build/coverage.json
	$(BIN)/python tools/coverage_floor.py build/coverage.json

# The coverage report as HTML (build/coverage-html/index.html), from the last `make test`, or
# from a fresh run of the suite when there is none.
coverage-html: $(STAMP)
	@test -f .coverage || { PYTHONPATH=$(CURDIR) $(BIN)/pytest -n 2 --dist loadfile --cov --cov-report= ; }
	$(BIN)/coverage html -q -d build/coverage-html
	@echo "build/coverage-html/index.html"

# Mutation testing (not in CI: minutes per module). mutmut copies the project into mutants/,
# mutates the modules in [tool.mutmut] only_mutate one change at a time and runs the fast
# tests (pytest_add_cli_args_test_selection) that reach it; then tools/mutation_scores.py prints
# the score of each module and the survivors (`mutmut show NAME` shows one). MUTANTS is one or
# more mutant-name patterns (fnmatch, `*` spans dots), each module's mutants rerun every time:
# one module by default, MUTANTS='worker.core.* worker.pipeline.*' several, MUTANTS='*' every
# delivery-critical module (hours on 2 cores). Niced: it yields the CPU to anything else running.
MUTANTS ?= worker.core.decision.*
mutate: $(STAMP)
	set -f; nice -n 19 $(BIN)/mutmut run --max-children 2 $(MUTANTS)
	set -f; $(BIN)/python tools/mutation_scores.py $(MUTANTS)

# checkov (security posture of deploy/ and the Dockerfile) runs offline from a virtualenv of its
# own, every package pinned (deploy/checkov-requirements.txt): its pins clash with the worker's.
# Installed once per change of that file; the skipped checks and their reasons are in
# deploy/.checkov.yaml.
CHECKOV_VENV := .venv-checkov
CHECKOV_STAMP := $(CHECKOV_VENV)/.installed-$(shell cat deploy/checkov-requirements.txt | cksum | cut -d' ' -f1)
CHECKOV_TARGETS := --directory deploy $(if $(wildcard Dockerfile),--file Dockerfile)

checkov: $(CHECKOV_STAMP)
	$(CHECKOV_VENV)/bin/checkov --config-file deploy/.checkov.yaml $(CHECKOV_TARGETS)

$(CHECKOV_STAMP): deploy/checkov-requirements.txt
	rm -rf $(CHECKOV_VENV)
	$(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install --quiet --disable-pip-version-check --no-deps -r deploy/checkov-requirements.txt
	@touch $@

# The long fault-injection run (real worker processes, thousands of messages, a few minutes):
# prints the figures and rewrites their section of docs/reliability.md. `make test` runs the
# bounded version (tests/chaos).
CHAOS_ARGS ?= --messages 3000 --workers 2 --kills 2 --outage-seconds 5 --seed 7
chaos: $(STAMP)
	$(BIN)/python -m devstack.chaos $(CHAOS_ARGS) --write docs/reliability.md

# Issue 6's hostile run against one real worker (hostile whitespace, an endpoint "not found" for
# 10 s, an oversized message; a few minutes): prints the figures, rewrites their section of
# docs/reliability.md, and fails when the run misses the bar.
HOSTILE_ARGS ?=
hostile: $(STAMP)
	$(BIN)/python -m devstack.chaos.hostile $(HOSTILE_ARGS) --write docs/reliability.md

# The memory soak: one real worker through SOAK_MESSAGES messages, its RSS sampled as it goes;
# writes the figures to docs/reliability.md and fails when RSS grows past the bar.
SOAK_ARGS ?= --messages 50000
soak: $(STAMP)
	$(BIN)/python -m devstack.chaos.soak $(SOAK_ARGS) --write docs/reliability.md

# LocalStack runs as a host process (no Docker) from a virtualenv of its own, every package pinned
# (bench/localstack-requirements.txt). Its release 2026.3.0 needs Python >= 3.13: the first
# python3.13 (or 3.14) that runs, on the PATH or under pyenv; else set LOCALSTACK_PYTHON=/path/to/python3.13.
LOCALSTACK_VENV := .venv-localstack
LOCALSTACK_PYTHON ?= $(shell for candidate in python3.13 $(HOME)/.pyenv/versions/3.13*/bin/python3 \
	python3.14 $(HOME)/.pyenv/versions/3.14*/bin/python3; do \
	"$$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 13))' 2>/dev/null \
	&& command -v "$$candidate" && break; done)
LOCALSTACK_STAMP := $(LOCALSTACK_VENV)/.installed-$(shell cat bench/localstack-requirements.txt | cksum | cut -d' ' -f1)

# The benchmark (a real run, not a test; a quarter of an hour, a few minutes with --short): the
# worker process against LocalStack (SQS, SNS) and the emulator, beside the reference consumer in
# bench/. Rewrites docs/performance.md and docs/performance.png. `make test` runs a smoke test only.
BENCH_ARGS ?=
bench: $(STAMP) $(LOCALSTACK_STAMP)
	$(BIN)/python -m bench --localstack-python $(LOCALSTACK_VENV)/bin/python $(BENCH_ARGS)

bench-short:
	$(MAKE) bench BENCH_ARGS=--short

localstack: $(LOCALSTACK_STAMP)

$(LOCALSTACK_STAMP): bench/localstack-requirements.txt
	@test -n "$(LOCALSTACK_PYTHON)" && "$(LOCALSTACK_PYTHON)" -c 'import sys; sys.exit(sys.version_info < (3, 13))' \
		|| { echo "LocalStack needs Python >= 3.13: set LOCALSTACK_PYTHON=/path/to/python3.13" >&2; exit 2; }
	rm -rf $(LOCALSTACK_VENV)
	"$(LOCALSTACK_PYTHON)" -m venv $(LOCALSTACK_VENV)
	$(LOCALSTACK_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r bench/localstack-requirements.txt
	@touch $@

# Regenerate the event contracts' JSON Schemas (docs/schemas/) after changing the message decoder
# or the verdict; tests/contracts fails while the committed files differ from the code.
schemas: $(STAMP)
	$(BIN)/python -m worker.contracts docs/schemas

# Regenerate the locks after changing dependencies in pyproject.toml: requirements.lock (every
# extra; the development venv) and requirements-prod.lock (the runtime dependencies only; the
# image), the second constrained by the first so both pin the same versions.
UV_VERSION := 0.13.8
lock: $(STAMP)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check "uv==$(UV_VERSION)"
	$(BIN)/python -m uv pip compile pyproject.toml --extra local --extra tokens --extra dev --extra otel --universal \
		--python-version 3.11 --generate-hashes -o requirements.lock
	$(BIN)/python -m uv pip compile pyproject.toml --universal --python-version 3.11 \
		--generate-hashes --constraint requirements.lock -o requirements-prod.lock

# The container image (Dockerfile): built with docker when a docker engine answers, else with
# podman (runc runtime; docker format, which keeps the HEALTHCHECK). Tagged :latest and with
# `git describe`. BASE_IMAGE and UV_IMAGE are build arguments; IMAGE_BUILD_FLAGS adds any others.
IMAGE ?= moderation-worker
IMAGE_VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
BASE_IMAGE ?= python:3.12-slim-bookworm
UV_IMAGE ?= ghcr.io/astral-sh/uv:$(UV_VERSION)
IMAGE_BUILD_FLAGS ?=
PODMAN_BUILD := podman build --runtime /usr/sbin/runc --format docker
image:
	@if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then \
		engine="docker build"; else engine="$(PODMAN_BUILD)"; fi; \
	set -x; $$engine --build-arg BASE_IMAGE=$(BASE_IMAGE) --build-arg UV_IMAGE=$(UV_IMAGE) \
		$(IMAGE_BUILD_FLAGS) -t $(IMAGE):latest -t $(IMAGE):$(IMAGE_VERSION) .

# On a machine with no registry access (podman, root): stand-ins for both images, made from
# Debian bookworm with debootstrap (Python 3.11) and from the uv wheel on PyPI.
STAND_IN_BASE_IMAGE := localhost/python-base:bookworm
STAND_IN_UV_IMAGE := localhost/uv:$(UV_VERSION)
image-base:
	sh deploy/image/stand-in-images.sh $(STAND_IN_BASE_IMAGE) $(STAND_IN_UV_IMAGE) $(UV_VERSION)

# The image from those stand-ins; uv fetches from PyPI through the host's CA bundle (for machines
# whose outbound TLS is re-signed by a local CA).
HOST_CA_BUNDLE ?= /etc/ssl/certs/ca-certificates.crt
image-standin: image-base
	$(MAKE) image BASE_IMAGE=$(STAND_IN_BASE_IMAGE) UV_IMAGE=$(STAND_IN_UV_IMAGE) \
		IMAGE_BUILD_FLAGS="--pull=never --build-arg UV_SYSTEM_CERTS=true \
		-v $(HOST_CA_BUNDLE):/etc/ssl/certs/ca-certificates.crt:ro"

clean:
	rm -rf $(VENV) $(LOCALSTACK_VENV) $(CHECKOV_VENV) .mypy_cache .pytest_cache .ruff_cache
