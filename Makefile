# fleetscore: one command per chore. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: help setup test lint fmt unit clean demo chaos eventhubs bench bench-quick model model-serve model-report aml-deploy

help: ## List the commands
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(STAMP): requirements.txt requirements-dev.txt
	@echo "==> creating $(VENV) and installing requirements-dev.txt"
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install --quiet --upgrade pip
	@$(PY) -m pip install --quiet -r requirements-dev.txt
	@touch $(STAMP)

node_modules/.package-lock.json: package.json package-lock.json
	@echo "==> installing Azurite (npm ci, into ./node_modules)"
	@npm ci --no-audit --no-fund --loglevel=error
	@touch $@

setup: $(STAMP) node_modules/.package-lock.json chromium ## Create .venv and install Python and npm packages

.PHONY: chromium
chromium: ## Install Debian's Chromium for the browser test if /usr/bin/chromium is missing
	@if [ ! -x /usr/bin/chromium ]; then \
		if [ "$$(id -u)" = 0 ]; then SUDO=; elif sudo -n true 2>/dev/null; then SUDO=sudo; \
		else echo "/usr/bin/chromium is missing and this user cannot apt-get: run 'sudo apt-get install -y chromium' (the browser test drives it)"; exit 1; fi; \
		echo "==> installing Debian's chromium for the browser test ($${SUDO:+sudo }apt-get install -y chromium)"; \
		$$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	fi

lint: $(STAMP) ## ruff: lint and format check
	@echo "==> ruff"
	@$(VENV)/bin/ruff check .
	@$(VENV)/bin/ruff format --check --quiet .

fmt: $(STAMP) ## Format and auto-fix
	@$(VENV)/bin/ruff format .
	@$(VENV)/bin/ruff check --fix .

test: setup lint ## Set up, lint, and run every test (starts Azurite itself)
	@echo "==> pytest"
	@$(PY) -m pytest

unit: $(STAMP) ## Only the unit tests: no Azurite, no local servers, no browser
	@$(PY) -m pytest -m "not azurite and not stack and not browser"

eventhubs: $(STAMP) ## Run the Event Hubs emulator on 127.0.0.1:5672 (Ctrl-C stops it)
	@$(PY) -m local.eventhubs --port 5672

# azmlinfsrv 1.5.1 has no --host and binds 0.0.0.0; this runs its own CLI with the host set to
# loopback (the same launcher as tests/support/azmlinfsrv.py).
AZMLINFSRV := $(PY) -c "import azureml_inference_server_http.amlserver as s; s.DEFAULT_HOST = '127.0.0.1'; s.run()"

model: $(STAMP) ## Train the failure predictor into model/artifacts/ (deterministic, seeded)
	@test -f data/train/manifest.json || $(PY) -m simulator generate --devices 60 --days 20 --seed 101 --out data/train
	@$(PY) -m model.train --data data/train --out model/artifacts --seed 0

model-report: $(STAMP) ## Evaluate the model and two baselines on a held-out fleet
	@$(PY) -m model.evaluate --model model/artifacts --out model/reports

model-serve: $(STAMP) ## Serve model/score.py with azmlinfsrv on 127.0.0.1:5001 (Ctrl-C stops it)
	@mkdir -p model/artifacts
	@AML_APP_ROOT=$(CURDIR) AZUREML_MODEL_DIR=$(CURDIR)/model/artifacts \
		$(AZMLINFSRV) --entry_script model/score.py --port 5001

# make aml-deploy AML_GROUP=<resource group> AML_WORKSPACE=<AML workspace> [MODEL_VERSION=<n>]:
# the steps of model/deploy/README.md. Registers model/artifacts as a new model version, creates
# the endpoint if it is missing, creates (or updates) the `blue` deployment on that version with
# all traffic, and prints the two values the function app needs. Needs the Azure CLI and its ml
# extension, signed in (az login); refuses with a message otherwise.
AML_GROUP ?=
AML_WORKSPACE ?=
AML_ENDPOINT_NAME := fleetscore-anomaly
AML_DEPLOYMENT_NAME := blue

aml-deploy: ## Deploy the model to an AML online endpoint (AML_GROUP=, AML_WORKSPACE=; needs az + its ml extension)
	@command -v az >/dev/null 2>&1 || { echo "make aml-deploy: the Azure CLI (az) is not installed; install it, run 'az extension add -n ml' and 'az login', then run this again"; exit 2; }
	@az extension show --name ml >/dev/null 2>&1 || { echo "make aml-deploy: the Azure CLI's ml extension is missing: az extension add -n ml"; exit 2; }
	@if [ -z "$(AML_GROUP)" ] || [ -z "$(AML_WORKSPACE)" ]; then echo "usage: make aml-deploy AML_GROUP=<resource group> AML_WORKSPACE=<AML workspace> [MODEL_VERSION=<n>]"; exit 2; fi
	@test -f model/artifacts/failure.json || { echo "make aml-deploy: model/artifacts/failure.json is missing: run 'make model' first"; exit 2; }
	@set -euo pipefail; \
	ws="--resource-group $(AML_GROUP) --workspace-name $(AML_WORKSPACE)"; \
	version="$${MODEL_VERSION:-$$(date -u +%Y%m%d%H%M%S)}"; \
	echo "==> 1/4 az ml model create: model/artifacts as $(AML_ENDPOINT_NAME):$$version"; \
	az ml model create --name $(AML_ENDPOINT_NAME) --version "$$version" --path model/artifacts --type custom_model $$ws --output none; \
	if az ml online-endpoint show --name $(AML_ENDPOINT_NAME) $$ws --output none 2>/dev/null; then \
		echo "==> 2/4 endpoint $(AML_ENDPOINT_NAME) exists"; \
	else \
		echo "==> 2/4 az ml online-endpoint create (model/deploy/endpoint.yml)"; \
		az ml online-endpoint create --file model/deploy/endpoint.yml $$ws --output none; \
	fi; \
	if az ml online-deployment show --name $(AML_DEPLOYMENT_NAME) --endpoint-name $(AML_ENDPOINT_NAME) $$ws --output none 2>/dev/null; then \
		echo "==> 3/4 az ml online-deployment update (model/deploy/deployment.yml, model version $$version)"; \
		az ml online-deployment update --file model/deploy/deployment.yml --set model=azureml:$(AML_ENDPOINT_NAME):$$version $$ws --output none; \
	else \
		echo "==> 3/4 az ml online-deployment create (model/deploy/deployment.yml, model version $$version, all traffic)"; \
		az ml online-deployment create --file model/deploy/deployment.yml --set model=azureml:$(AML_ENDPOINT_NAME):$$version --all-traffic $$ws --output none; \
	fi; \
	echo "==> 4/4 the function app's settings"; \
	echo "AML_ENDPOINT_URL=$$(az ml online-endpoint show --name $(AML_ENDPOINT_NAME) $$ws --query scoring_uri --output tsv)"; \
	echo "AML_ENDPOINT_KEY: az ml online-endpoint get-credentials --name $(AML_ENDPOINT_NAME) $$ws --query primaryKey --output tsv"

bench: setup ## Every benchmark (~12 min): bench/results.json, bench/RESULTS.md, bench/e2e_latency.png
	@echo "==> make bench: each hop, the design's ratios, the table writer, and the whole stack at rising load"
	@$(PY) bench/run_all.py

bench-quick: setup ## The same figures on a smaller scale (~3 min), same files
	@echo "==> make bench-quick: every benchmark on a small scale"
	@$(PY) bench/run_all.py --quick

# make demo [DURATION=120] [DEVICES=20] [SCORE_HOSTS=2]: empty DURATION runs until Ctrl-C.
DURATION ?=
DEVICES ?= 20
SCORE_HOSTS ?= 2

demo: setup ## The whole pipeline on this machine (DURATION=120 ends with a summary)
	@echo "==> make demo: Azurite, Event Hubs emulator, azmlinfsrv, dashboard, 1 HTTP host, $(SCORE_HOSTS) score hosts; $(DEVICES) simulated devices$(if $(DURATION), for $(DURATION) s, until Ctrl-C)"
	@$(PY) -m local.demo --devices $(DEVICES) --score-hosts $(SCORE_HOSTS) $(if $(DURATION),--duration $(DURATION))

chaos: setup ## Faults, poison, security probes and 10k fuzz cases over the whole stack (~12 min)
	@echo "==> make chaos: the stack under faults (score hosts killed, AML throttled and down, Azurite and Event Hubs restarted, poison), security probes, log scan, then fuzzing"
	@$(PY) -m local.chaos $(if $(OUTAGE),--outage $(OUTAGE))

clean: ## Remove caches (keeps .venv and node_modules)
	@rm -rf .pytest_cache .ruff_cache __azurite_db_* __blobstorage__ __queuestorage__
	@find . -name __pycache__ -not -path './.venv/*' -not -path './node_modules/*' -prune -exec rm -rf {} +
