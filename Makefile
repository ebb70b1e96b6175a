# Two commands matter: `make demo` and `make test`. Each sets up .venv by itself.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
export DVC_NO_ANALYTICS := 1
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

# The whole pipeline of dvc.yaml on the built-in sample data; knobs in params.yaml. It ends with
# one screen of results (`dvc metrics show` lists every figure). robolake quiets TensorFlow's and
# Beam's start-up lines itself (robolake/quiet.py).
demo: venv
	dvc repro
	robolake summary

# The peers the tests check against, each skipped with its reason where it can't be set up:
# Debian's chromium (headless report checks) and a venv with the real lerobot 0.4.4 and lerobot-doctor 0.2.0.
test: venv
	sh tests/peers/chromium.sh
	bash tests/peers/lerobot_venv.sh
	$(BIN)/python -m pytest -q -n 2 --dist loadfile  # a file's tests stay on one process, sharing its fixtures

bench: venv
	$(BIN)/python benchmarks/convert.py
	$(BIN)/python benchmarks/stats.py
	$(BIN)/python benchmarks/convert_bag.py
	$(BIN)/python benchmarks/report.py
	$(BIN)/python benchmarks/mix.py
	$(BIN)/python benchmarks/train.py
	$(BIN)/python benchmarks/policy_latency.py
	$(BIN)/python benchmarks/view.py
	$(BIN)/python benchmarks/scale.py

clean:
	rm -rf lake .pytest_cache
