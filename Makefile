# The two set-up commands of the README: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# CPU build of torch from this machine's disk; users may install any recent torch (pyproject accepts >=2.1).
TORCH_SPEC ?= torch==2.13.0
STAMP  := $(VENV)/.installed
DEMO   ?= demo_out

.PHONY: install demo test test-all lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# Phantom -> semi-supervised SDNet (labels from 4 of 40 subjects) -> held-out test Dice + figures.
demo: $(STAMP)
	rm -rf $(DEMO)/run
	$(BIN)/sdnet phantom --out $(DEMO)/phantom --subjects 40 --size 96 --seed 0 --force
	$(BIN)/sdnet train --config configs/phantom_demo.yaml --data $(DEMO)/phantom --out $(DEMO)/run
	$(BIN)/sdnet evaluate --checkpoint $(DEMO)/run --figures 4

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-all: $(STAMP)
	$(BIN)/python -m pytest -q -m ''

# Benchmark suite (~10 min on 2 cores): prints the table and writes docs/performance.md. Not part of `make test`.
bench: $(STAMP)
	$(BIN)/python -m benchmarks

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks experiments
	$(BIN)/mypy

clean:
	rm -rf $(DEMO) .pytest_cache .mypy_cache .ruff_cache
