# emofuse: `make demo` sets everything up and runs `emofuse quickstart`; `make test` runs the test suite.
comma  := ,
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
EXTRAS ?= all
STAMP  := $(VENV)/.emofuse-installed-$(subst $(comma),-,$(EXTRAS))
DEMO_DIR ?= .emofuse-cache/quickstart

.PHONY: setup demo test lint clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet "torch==2.13.0"
	$(BIN)/python -m pip install --quiet -e ".[$(EXTRAS)]"
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(BIN)/emofuse doctor
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(BIN)/emofuse quickstart --out $(DEMO_DIR)

test: setup
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy src

clean:
	rm -rf $(VENV) .emofuse-cache .pytest_cache .ruff_cache
