# The README's three commands: `make setup`, `make demo`, `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
# Datasets root: $DETECTRON2_DATASETS if set; else the shared copy beside this checkout when
# there is one (this workplace and its CI); else ./datasets, Detectron2's default.
export DETECTRON2_DATASETS ?= $(if $(wildcard ../shared/data/PennFudanPed),$(abspath ../shared/data),$(abspath datasets))

.PHONY: setup test test-fast lint demo env

setup:
	bash scripts/setup.sh

lint:
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/hadolint Dockerfile

# Every test (what CI runs); `make test-fast` leaves out the ones marked slow (tiny trainings).
test: lint
	$(PY) -m pytest -q

test-fast:
	$(PY) -m pytest -q -m "not slow"

env:
	$(PY) -m instseg_d2.env

demo:
	bash scripts/demo.sh
