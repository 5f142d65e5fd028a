# Confidant — `make help` lists the targets.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DELETE_ON_ERROR:
.DEFAULT_GOAL := help
MAKEFLAGS += --no-builtin-rules

PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PROTOS := $(shell find protos -name '*.proto')
GEN_STAMP := gen/.stamp
# The manifest checks' tools (checkov, kubernetes-validate, hadolint) live in their own venv:
# their dependencies conflict with the project's.
DEPLOY_VENV := .venv-deploy
DEPLOY_STAMP := $(DEPLOY_VENV)/.installed

.PHONY: help
help: ## Show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  \033[1m%-10s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(STAMP): requirements.lock pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "Python 3.11 is needed: install python3.11 (or set PYTHON=/path/to/python3.11)."; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.lock
	@# The repository root and the generated code are importable from the venv.
	@printf '%s\n%s\n' "$(CURDIR)" "$(CURDIR)/gen" > $$($(PY) -c 'import sysconfig; print(sysconfig.get_path("purelib"))')/confidant-src.pth
	@touch $@

$(GEN_STAMP): $(STAMP) $(PROTOS)
	rm -rf gen && mkdir -p gen
	$(PY) -m grpc_tools.protoc -Iprotos --python_out=gen --pyi_out=gen --grpc_python_out=gen $(PROTOS)
	@touch $@

$(DEPLOY_STAMP): deploy/tools-requirements.lock
	@command -v $(PYTHON) >/dev/null || { echo "Python 3.11 is needed: install python3.11 (or set PYTHON=/path/to/python3.11)."; exit 1; }
	$(PYTHON) -m venv $(DEPLOY_VENV)
	$(DEPLOY_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r deploy/tools-requirements.lock
	@touch $@

.PHONY: deploy-tools
deploy-tools: $(DEPLOY_STAMP) ## Install the manifest checks' tools (checkov, kubernetes-validate) into .venv-deploy

.PHONY: venv
venv: $(STAMP) ## Create the virtual environment from the lock file

.PHONY: protos
protos: $(GEN_STAMP) ## Generate Python code from protos/ (never edit gen/ by hand)

.PHONY: lock
lock: ## Re-resolve dependencies from pyproject.toml into requirements.lock
	bin/lock

.PHONY: run
run: protos ## Everything up in development mode, with the demo practice
	$(PY) -m bin.devrun

.PHONY: test
test: protos deploy-tools ## Run every test (unit, integration, end-to-end in Chromium)
	bin/browser-deps
	bin/axe-core >/dev/null
	$(PY) -m pytest

.PHONY: bench
bench: protos ## Measure send throughput and latency through the web edge
	$(PY) -m bin.bench

.PHONY: lint
lint: protos ## Lint Python (ruff) and the protos (buf)
	$(VENV)/bin/ruff check services bin tests
	bin/buf lint protos

.PHONY: clean
clean: ## Remove generated code and the virtual environment (keeps .data/)
	rm -rf gen $(VENV) $(DEPLOY_VENV)
