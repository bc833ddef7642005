# CapsLab developer commands. `make demo` and `make test` create .venv when it is missing.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.capslab-installed

# Data setting: $CAPSLAB_DATA wins; otherwise use ../shared/datasets when it exists.
ifeq ($(CAPSLAB_DATA),)
ifneq ($(wildcard ../shared/datasets/mnist),)
export CAPSLAB_DATA := $(abspath ../shared/datasets)
endif
endif

.PHONY: demo test lint bench venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml requirements.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first and pinned: pip must never resolve a multi-GB CUDA build
	$(BIN)/python -m pip install -q -r requirements.txt
	$(BIN)/python -m pip install -q -e '.[dev,tensorboard,export]'
	touch $(STAMP)

# MNIST comes from $CAPSLAB_DATA (or ../shared/datasets, see above) when it is there; otherwise it
# is downloaded once (resumable, md5-checked) into ~/.cache/capslab/datasets. Offline, the first
# step stops with one line saying where to put the files (CAPSLAB_OFFLINE=1: never download).
demo: $(STAMP)
	$(BIN)/capslab datasets --download mnist
	$(BIN)/capslab train --model capsnet --dataset mnist --epochs 2 --subset 6000 --test-subset 1000 \
		--policy warm-restarts --out runs/demo --seed 0 --resume
	$(BIN)/capslab hw --model capsnet
	$(BIN)/capslab report runs/demo
	@echo "Open runs/demo/report.html in a browser (curves, reconstructions, confusion matrix, settings)"

test: $(STAMP)
	$(BIN)/python -m pytest

# ruff, then the layers of docs/architecture.md as pyproject.toml's import-linter contracts
lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/lint-imports

bench: $(STAMP)
	$(BIN)/capslab bench

clean:
	rm -rf runs .pytest_cache
