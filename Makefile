# The two commands of the README. Both set up .venv on first use.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
STAMP := $(VENV)/.benchxfer-installed

.PHONY: demo test install clean-demo screenshots

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/benchxfer sweep sweeps/demo.yaml

test: $(STAMP)
	$(BIN)/python -m ruff check benchxfer tests benchmarks
	$(BIN)/python -m pytest

# the PNGs of docs/report.md: the MLflow UI and report.html of the demo (after `make demo`); needs chromium
screenshots: $(STAMP)
	$(BIN)/python benchmarks/screenshots.py --sweep demo --out docs/img

clean-demo:
	rm -rf $${BENCHXFER_HOME:-$$HOME/.benchxfer}/runs/demo
