# The README's commands. Every target creates the virtual environment itself.
PY ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev
# The CPU wheel of torch lies on disk here; a looser requirement would fetch a multi-GB CUDA build.
TORCH_PIN ?= torch==2.13.0

.PHONY: install test test-slow lint demo bench clean

# The demo needs only the package; the tests also need the dev extra (test tools, transformers,
# tensorboard, wandb), installed once on top.
$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH_PIN)"
	$(BIN)/python -m pip install -q -e .
	touch $(STAMP)

$(DEV_STAMP): $(STAMP)
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(DEV_STAMP)

install: $(DEV_STAMP)

test: $(DEV_STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/python -m pytest -q

test-slow: $(DEV_STAMP)
	$(BIN)/python -m pytest -q -m slow

lint: $(DEV_STAMP)
	$(BIN)/ruff check src tests benchmarks
	

demo: $(STAMP)
	$(BIN)/plasticlm study configs/demo.toml

bench: $(DEV_STAMP)
	$(BIN)/python benchmarks/bench_train.py
	$(BIN)/python benchmarks/bench_data.py
	$(BIN)/python benchmarks/bench_stream.py

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache .ruff_cache
