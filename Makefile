# Everything a fresh machine needs: `make demo` and `make test` create the venv themselves.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv venv-d3rlpy demo test lint bench clean

venv: $(STAMP)

# torch first, pinned: a bare `torch` requirement on an empty venv pulls the CUDA build (GBs).
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m offrl.demo

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .

# d3rlpy 2.8.1, the peer of `make bench`, pins gymnasium==1.0.0 (offrl needs >= 1.1): it gets
# its own venv (with MuJoCo, for its sequential DT evaluation in benchmarks/eval_speed.py). torch first and pinned, for the same reason as above.
D3RLPY_VENV := .venv-d3rlpy
D3RLPY_STAMP := $(D3RLPY_VENV)/.installed

venv-d3rlpy: $(D3RLPY_STAMP)

$(D3RLPY_STAMP):
	test -x $(D3RLPY_VENV)/bin/python || $(PY) -m venv $(D3RLPY_VENV)
	$(D3RLPY_VENV)/bin/pip install --quiet --upgrade pip
	$(D3RLPY_VENV)/bin/pip install --quiet torch==2.13.0
	$(D3RLPY_VENV)/bin/pip install --quiet d3rlpy==2.8.1 h5py "gymnasium[mujoco]==1.0.0"
	$(D3RLPY_VENV)/bin/python -c "import d3rlpy, h5py, torch; assert d3rlpy.__version__ == '2.8.1'"
	touch $(D3RLPY_STAMP)

# Data layer, then training/evaluation speed side by side with d3rlpy (benchmarks/bench.py;
# `$(BIN)/python -m benchmarks.bench --quick` for a smoke run).
bench: $(STAMP) $(D3RLPY_STAMP)
	$(BIN)/python benchmarks/data_layer.py
	$(BIN)/python -m benchmarks.bench

clean:
	rm -rf $(VENV) build *.egg-info
