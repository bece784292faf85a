# The two commands of the README. Both set up .venv on first use. The modules are compiled once at install, on every
# core (pip's own compile uses one: 94 s -> 76 s on 2 cores), benchxfer's too: with PYTHONDONTWRITEBYTECODE set, as
# on this project's machines, Python never writes a compiled copy itself, and without one every process (each Ray
# worker) would compile torch, Ray and MLflow again. The dependencies' own test suites (3,500 of the venv's 19,500
# modules: pandas, sympy, scipy ...; no module that benchxfer, MLflow or Ray Train loads is one) are left out:
# 30 s -> 23 s on 2 cores. compileall's status is ignored, as pip ignores it: a few files in the dependencies are not
# Python 3.11 (torch's py312 test helpers).
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
STAMP := $(VENV)/.benchxfer-installed

.PHONY: demo test test-fast test-heavy lint install clean-demo screenshots

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --no-compile -e ".[test]"
	$(BIN)/python -m compileall -qq -j 0 -x '/tests?/' $(VENV)/lib benchxfer || true
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/benchxfer sweep sweeps/demo.yaml

# Two tiers (tests/tier_guard.py): `fast` tests need no Ray session, cluster, MLflow server or subprocess sweep;
# every other test (one without the mark) is the slow tier, its tests run one after another. `make test` runs the
# fast tier beside the slow one (tests/run_tiers.sh). PYTEST_ARGS narrows both, e.g.
# `make test PYTEST_ARGS=tests/test_spec.py`: then a tier left without tests (pytest's exit 5) is fine; in a full
# run an empty tier is an error (the marks were lost).
PYTEST_ARGS ?=
NO_TESTS_OK = { rc=$$?; [ $$rc -eq 5 ] && [ -n "$(PYTEST_ARGS)" ] || exit $$rc; }

lint: $(STAMP)
	$(BIN)/python -m ruff check benchxfer tests benchmarks

test-fast: lint
	$(BIN)/python -m pytest -m fast $(PYTEST_ARGS) || $(NO_TESTS_OK)

test: lint
	tests/run_tiers.sh $(BIN)/python $(PYTEST_ARGS)

# the heavy tier, not part of `make test`: a BiT R152x4 trial (about 12 GB of memory, 2 minutes on 2 cores)
test-heavy: $(STAMP)
	$(BIN)/python -m pytest -m heavy $(PYTEST_ARGS) || $(NO_TESTS_OK)

# the PNGs of docs/report.md: the MLflow UI and report.html of the demo (after `make demo`); needs chromium
screenshots: $(STAMP)
	$(BIN)/python benchmarks/screenshots.py --sweep demo --out docs/img

clean-demo:
	rm -rf $${BENCHXFER_HOME:-$$HOME/.benchxfer}/runs/demo
