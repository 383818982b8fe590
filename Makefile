# kohya_wrap — everyday commands. `make setup` once, then `make test` / `make train CONFIG=...`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Leave TORCH empty to keep a torch the venv already has (e.g. a CUDA build you installed yourself).
TORCH ?= torch torchvision
SD_SCRIPTS := vendor/sd-scripts
# Files the sd-scripts source copy may lack that nobody needs on Linux (Windows DLLs, one Qwen tokenizer).
SPARSE := '/*' '!/bitsandbytes_windows/' '!/configs/qwen3_06b/tokenizer.json'

.PHONY: setup submodule venv demo test test-fast test-e2e lint train render tag bench sync-args clean-venv

setup: submodule venv
	@echo "setup done: activate with 'source $(BIN)/activate' or use 'make test', 'make train CONFIG=...'"

submodule:
	@if [ -d .git ] || [ -f .git ]; then \
	  git submodule update --init $(SD_SCRIPTS) >/dev/null 2>&1 || true; \
	  if [ -e $(SD_SCRIPTS)/.git ]; then \
	    git -C $(SD_SCRIPTS) sparse-checkout set --no-cone $(SPARSE) && git submodule update $(SD_SCRIPTS) || true; \
	  fi; \
	fi
	@if [ -f $(SD_SCRIPTS)/train_network.py ]; then echo "sd-scripts: $$(git -C $(SD_SCRIPTS) rev-parse HEAD)"; \
	 else echo "*** sd-scripts checkout unavailable: training and the sd_scripts tests will be SKIPPED ***"; fi

venv:
	@[ -x $(BIN)/python ] || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	@if [ -n "$(TORCH)" ] && ! $(BIN)/python -c "import torch, torchvision" 2>/dev/null; then \
	  echo "installing $(TORCH)"; $(BIN)/python -m pip install -q $(TORCH); fi
	@if [ -f $(SD_SCRIPTS)/requirements.txt ]; then \
	  echo "installing sd-scripts requirements"; \
	  cd $(SD_SCRIPTS) && ../../$(BIN)/python -m pip install -q -r requirements.txt; fi
	$(BIN)/python -m pip install -q -e '.[dev,ui,ray]'

# A real training run on a random-weight SD1.5 model (built once into .demo-cache/): nothing to download.
demo:
	$(BIN)/python tools/demo.py

test:
	$(BIN)/python -m pytest -q

test-fast:
	$(BIN)/python -m pytest -q -m "not sd_scripts and not gpu and not ray and not browser"

test-e2e:
	$(BIN)/python -m pytest -q -m sd_scripts

lint:
	$(BIN)/ruff check kohya_wrap tests tools bench
	$(BIN)/ruff format --check kohya_wrap tests tools bench
	$(BIN)/mypy

train:
	@[ -n "$(CONFIG)" ] || { echo "usage: make train CONFIG=path/to/config.toml [ARGS='--set dataset.dirs=...']"; exit 2; }
	$(BIN)/kohya-wrap train $(CONFIG) $(ARGS)

render:
	@[ -n "$(CONFIG)" ] || { echo "usage: make render CONFIG=path/to/config.toml"; exit 2; }
	$(BIN)/kohya-wrap render $(CONFIG) --new-run $(ARGS)

tag:
	@[ -n "$(DIR)" ] || { echo "usage: make tag DIR=path/to/images [ARGS='--trigger zdm']"; exit 2; }
	$(BIN)/kohya-wrap tag $(DIR) $(ARGS)

bench:
	$(BIN)/python bench/run_all.py

sync-args:
	$(BIN)/python tools/dump_sd_args.py --sd-scripts $(SD_SCRIPTS) --out kohya_wrap/train/sd_scripts_args.json

clean-venv:
	rm -rf $(VENV)
