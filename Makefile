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

# One torch thread per process by default: the tests use tiny models, and on a shared or loaded machine
# several spinning threads per process are many times slower (set OMP_NUM_THREADS to override).
test: setup
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(BIN)/python -m pytest -q --durations=15

lint: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy src

clean:
	rm -rf $(VENV) .emofuse-cache .pytest_cache .ruff_cache
