# Two commands matter: `make demo` and `make test`. Each sets up .venv by itself.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
export DVC_NO_ANALYTICS := 1
export TF_CPP_MIN_LOG_LEVEL := 2
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: venv demo test bench clean

# torch first from the local CPU wheel (an unpinned torch pulls GBs of CUDA packages),
# then the pinned stack, then robolake itself (editable, so Beam workers import it).
$(BIN)/robolake: pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -c requirements.lock -e '.[test,meaning]'
	touch $@

venv: $(BIN)/robolake

# The whole pipeline of dvc.yaml on the built-in sample data; knobs in params.yaml.
demo: venv
	dvc repro
	dvc metrics show

test: venv
	$(BIN)/python -m pytest -q

bench: venv
	$(BIN)/python benchmarks/convert.py
	$(BIN)/python benchmarks/stats.py
	$(BIN)/python benchmarks/convert_bag.py
	$(BIN)/python benchmarks/report.py
	$(BIN)/python benchmarks/mix.py
	$(BIN)/python benchmarks/train.py
	$(BIN)/python benchmarks/policy_latency.py
	$(BIN)/python benchmarks/scale.py

clean:
	rm -rf lake .pytest_cache
