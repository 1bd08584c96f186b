# Quick start: `make demo` and `make test`. Both build .venv from nothing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test install bench evaluation clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# torch first and pinned: the wheel on disk is the CPU build; letting the
# resolver pick torch from the range in pyproject.toml pulls gigabytes.
$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install torch==2.13.0
	$(BIN)/pip install -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/vigil demo

test: $(STAMP)
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python -m loadtest.bench_edge_path

# Regenerates docs/evaluation.md from ../shared/datasets (VIGIL_DATASETS moves it); about 5 minutes.
evaluation: $(STAMP)
	$(BIN)/python -m streams.evaluation.report --out docs/evaluation.md

clean:
	rm -rf $(VENV) .vigil vigil-report
