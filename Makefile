# Every target creates .venv when it is missing and installs what it needs.
# torch is pinned for pip: the CPU build of 2.13.0 lies on this project's machines,
# and a looser spec would pull a multi-GB CUDA build.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH_PIN := torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: demo test docs check lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH_PIN)"
	$(BIN)/python -m pip install --quiet -e ".[test,lint,plot,docs]" "$(TORCH_PIN)"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/npgrad demo

# The docs build first: pytest's summary stays the last line of the output.
test: $(STAMP) docs
	$(BIN)/python -m pytest

docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet -d site

check: $(STAMP)
	$(BIN)/npgrad check

lint: $(STAMP)
	$(BIN)/ruff check src plugins tests benchmarks examples
	$(BIN)/ruff format --check src plugins tests benchmarks examples
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python benchmarks/overhead.py
	$(BIN)/python benchmarks/conv.py
	$(BIN)/python benchmarks/func.py
	$(BIN)/python benchmarks/lfilter.py
	$(BIN)/python benchmarks/spsolve.py
	$(BIN)/python benchmarks/import_time.py

clean:
	rm -rf $(VENV) build dist .pytest_cache .mypy_cache .ruff_cache
