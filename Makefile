# Quick start: `make demo` and `make test`. Both build .venv from nothing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test install bench evaluation clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# torch first and pinned to the version the project is tested with: where a CPU wheel is on
# disk (PIP_FIND_LINKS) pip takes it; elsewhere PyPI serves the CUDA build (about 4.5 GB
# installed, downloaded once into pip's cache). The package itself accepts a range.
$(STAMP): $(BIN)/python pyproject.toml setup.py
	$(BIN)/pip install torch==2.13.0
	$(BIN)/pip install -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/vigil demo

# Two processes, a test file each at a time: most broker tests wait on a worker or the broker, so two
# files overlap on a 2-core machine (each process starts its own broker).
test: $(STAMP)
	$(BIN)/python -m pytest -n 2 --dist loadfile

bench: $(STAMP)
	$(BIN)/python -m loadtest.bench_edge_path

# Regenerates docs/evaluation.md from ../shared/datasets (VIGIL_DATASETS moves it); about 5 minutes.
evaluation: $(STAMP)
	$(BIN)/python -m vigil.streams.evaluation.report --out docs/evaluation.md

clean:
	rm -rf $(VENV) .vigil vigil-report
