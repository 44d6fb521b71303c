# bertprobe: `make demo` trains and evaluates on bundled SST-2 with the bundled encoder;
# `make test` runs the full test suite. Both create .venv on first use and reuse it after.
# `make demo` ends by writing an HTML report (report/sst2-minilm-auto/report.html).

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build of torch; an unpinned torch would pull gigabytes of CUDA packages.
TORCH_SPEC ?= torch==2.13.0
DEMO_OUT ?= models
PIP := $(BIN)/python -m pip --disable-pip-version-check -q

.PHONY: demo test test-fast lint bench bench-serve clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip
	$(PIP) install "$(TORCH_SPEC)"
	$(PIP) install -e '.[dev]'
	touch $@

demo: $(BIN)/.installed
	$(BIN)/bertprobe train data/sst2/train.tsv --test data/sst2/test.tsv --encoder minilm \
		--pooling cls --layer -1 --out $(DEMO_OUT)/sst2-minilm-cls
	$(BIN)/bertprobe train data/sst2/train.tsv --test data/sst2/test.tsv --encoder minilm \
		--pooling mean --layer -1 --out $(DEMO_OUT)/sst2-minilm-mean
	$(BIN)/bertprobe train data/sst2/train.tsv --test data/sst2/test.tsv --encoder minilm \
		--auto --out $(DEMO_OUT)/sst2-minilm-auto
	$(BIN)/bertprobe predict --model $(DEMO_OUT)/sst2-minilm-auto \
		"a gorgeous, witty, seductive movie" "the plot is a mess and the jokes fall flat"
	$(BIN)/bertprobe report --model $(DEMO_OUT)/sst2-minilm-auto data/sst2/test.tsv \
		--out report/sst2-minilm-auto

test: $(BIN)/.installed
	$(BIN)/python -m pytest

test-fast: $(BIN)/.installed
	$(BIN)/python -m pytest -m "not slow"

# Embedding and classifier benchmark against the recipe and its peers (prints a table).
bench: $(BIN)/.installed
	$(BIN)/python bench/embed_bench.py

# Load benchmark of the HTTP service (loopback only): dynamic batching on against off.
bench-serve: $(BIN)/.installed
	$(BIN)/python bench/serve_load.py --model $(DEMO_OUT)/sst2-minilm-mean

lint: $(BIN)/.installed
	$(BIN)/ruff check src tests bench

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache
