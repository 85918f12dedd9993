# The two commands a newcomer types: `make demo` and `make test`. Both set up .venv first.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export PYTHONHASHSEED := 0

.PHONY: setup demo demo-small test test-slow lint bench clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev,vision,explorer]'
	# GeoCLIP's pretrained location encoder weights (model/location_encoder=geoclip): the wheel only, without
	# its dependencies (transformers, torchvision: they would move the pinned torch); locsens never imports it
	$(BIN)/python -m pip install -q --no-deps 'geoclip==1.3.0'
	@touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m locsens.demo size=demo

demo-small: $(STAMP)
	$(BIN)/python -m locsens.demo size=tiny

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks *.py
	$(BIN)/ruff format --check src tests benchmarks *.py

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow -o addopts=-ra; rc=$$?; [ $$rc -eq 0 ] || [ $$rc -eq 5 ]

bench: $(STAMP)
	for b in benchmarks/*.py; do $(BIN)/python $$b || exit 1; done

clean:
	rm -rf data outputs multirun runs wandb lightning_logs
