# The README's three commands: `make setup`, `make demo`, `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
export DETECTRON2_DATASETS ?= $(abspath ../shared/data)

.PHONY: setup test lint demo env

setup:
	bash scripts/setup.sh

lint:
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/hadolint Dockerfile

test: lint
	$(PY) -m pytest -q

env:
	$(PY) -m instseg_d2.env

demo:
	bash scripts/demo.sh
