# The README's three commands: `make setup`, `make demo`, `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
# Datasets root: $DETECTRON2_DATASETS if set; else the shared copy beside this checkout when
# there is one (this workplace and its CI); else ./datasets, Detectron2's default.
export DETECTRON2_DATASETS ?= $(if $(wildcard ../shared/data/PennFudanPed),$(abspath ../shared/data),$(abspath datasets))

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
