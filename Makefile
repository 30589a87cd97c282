# Every target creates .venv when it is missing and installs what it needs.
# torch is pinned for pip: the CPU build of 2.13.0 lies on this project's machines,
# and a looser spec would pull a multi-GB CUDA build.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH_PIN := torch==2.13.0
STAMP := $(VENV)/.installed
# The newest torch this project's machines can install: a CUDA build from their own disk,
# which runs on the CPU. CI runs the suite on it too.
LATEST_VENV := .venv-latest
LATEST_TORCH_PIN := torch==2.14.1
LATEST_STAMP := $(LATEST_VENV)/.installed

.PHONY: demo test test-quick test-public-torch test-latest-torch docs docs-browser check lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH_PIN)"
	$(BIN)/python -m pip install --quiet -e ".[test,lint,plot,docs,dask]" "$(TORCH_PIN)"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/npgrad demo

# The docs build first, and the slice with torch's internals off: pytest's summary of the
# whole suite stays the last line of the output.
test: $(STAMP) docs test-public-torch
	$(BIN)/python -m pytest

# The quick lane: everything but the tests marked slow (compiling, processes, benchmarks).
test-quick: $(STAMP)
	$(BIN)/python -m pytest -m "not slow"

# npgrad with every private torch internal replaced by its public fallback.
test-public-torch: $(STAMP)
	NPGRAD_TORCH_INTERNALS=0 $(BIN)/python -m pytest -q -m "not slow" tests/test_torch_internals.py tests/test_gradients.py tests/test_tangents.py tests/test_vmap.py tests/test_function.py

$(LATEST_STAMP): pyproject.toml
	$(PYTHON) -m venv $(LATEST_VENV)
	$(LATEST_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(LATEST_VENV)/bin/python -m pip install --quiet "$(LATEST_TORCH_PIN)"
	$(LATEST_VENV)/bin/python -m pip install --quiet -e ".[test,plot,dask]" "$(LATEST_TORCH_PIN)"
	touch $(LATEST_STAMP)

test-latest-torch: $(LATEST_STAMP)
	$(LATEST_VENV)/bin/python -m pytest

docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet -d site

# The built site in headless Chromium (Debian's, installed here when missing): screenshots of
# every page at 1280 and 390 px in site-shots/; fails on sideways scrolling or console errors.
docs-browser: docs
	command -v chromium >/dev/null || (apt-get update -q && apt-get install -y -q chromium)
	$(BIN)/python docs/browser_check.py --site site --out site-shots

check: $(STAMP)
	$(BIN)/npgrad check

lint: $(STAMP)
	$(BIN)/ruff check src plugins tests benchmarks examples docs/browser_check.py
	$(BIN)/ruff format --check src plugins tests benchmarks examples docs/browser_check.py
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python benchmarks/overhead.py
	$(BIN)/python benchmarks/conv.py
	$(BIN)/python benchmarks/func.py
	$(BIN)/python benchmarks/lfilter.py
	$(BIN)/python benchmarks/spsolve.py
	$(BIN)/python benchmarks/import_time.py
	$(BIN)/python benchmarks/optimize.py
	$(BIN)/python benchmarks/executors.py
	$(BIN)/python benchmarks/integrate.py

clean:
	rm -rf $(VENV) $(LATEST_VENV) build dist .pytest_cache .mypy_cache .ruff_cache
