# Two commands matter: `make demo` and `make test`. Each sets up .venv by itself.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
LAKE ?= lake
export DVC_NO_ANALYTICS := 1
export TF_CPP_MIN_LOG_LEVEL := 2

.PHONY: venv demo test bench clean

# torch first from the local CPU wheel (an unpinned torch pulls GBs of CUDA packages),
# then the pinned stack, then robolake itself (editable, so Beam workers import it).
$(BIN)/robolake: pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -c requirements.lock -e '.[test]'
	touch $@

venv: $(BIN)/robolake

demo: venv
	rm -rf $(LAKE)/demo_raw
	$(BIN)/robolake synth $(LAKE)/demo_raw --episodes 12 --steps 40
	$(BIN)/robolake convert datasets/synthetic_tabletop.yaml --lake $(LAKE) --overwrite

test: venv
	$(BIN)/python -m pytest -q

bench: venv
	$(BIN)/python benchmarks/convert.py

clean:
	rm -rf $(LAKE) .pytest_cache
