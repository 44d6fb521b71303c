SHELL := /bin/bash
# bertprobe: `make demo` trains and evaluates on bundled SST-2 with the bundled encoder;
# `make test` runs the full test suite. Both create .venv on first use and reuse it after,
# installing the exact versions the test suite passed with (requirements.lock).
# `make demo` ends by writing an HTML report (report/sst2-minilm-auto/report.html).

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
LOCK := requirements.lock
# The CPU build of torch, for `make lock` and `make check-latest`; an unpinned torch would pull
# gigabytes of CUDA packages. The lock records the build it resolved.
TORCH_SPEC ?= torch==2.13.0+cpu
# Where pip finds the CPU torch wheel (pip's own setting here; uv does not read pip's config).
FIND_LINKS ?= $(PIP_FIND_LINKS)
UV_SPEC ?= uv==0.13.9
DEMO_OUT ?= models
FUZZ_EXAMPLES ?= 5000
# `make lock LOCK_UPGRADE=` adds what pyproject.toml newly asks for and moves nothing else.
LOCK_UPGRADE ?= --upgrade
PIP := $(BIN)/python -m pip --disable-pip-version-check -q
# The browser libraries `export --web` copies into a page (web/package-lock.json, from the npm
# registry), installed beside the venv where bertprobe looks for them first.
WEB_ASSETS := $(VENV)/share/bertprobe/web
NPM ?= npm

.PHONY: demo demo-finetune test test-fast fuzz check lint lock check-latest bench bench-serve \
	bench-finetune bench-scale bench-export bench-int8 bench-long-line bench-fewshot \
	bench-explain bench-encoders bench-distill bench-tracking bench-web docs clean

# The locked versions, then the package itself without resolving anything again; `pip check`
# fails here, not in a test, when pyproject.toml asks for something the lock does not hold.
$(BIN)/.installed: $(LOCK) pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip
	$(PIP) install -r $(LOCK)
	$(PIP) install --no-deps -e .
	$(BIN)/python -m pip check
	touch $@

# npm ci: exactly the lock's versions, their tarballs checked against its sha512; no install
# scripts run (the page only copies files; bertprobe checks each one's SHA-256 too).
$(WEB_ASSETS)/.installed: web/package.json web/package-lock.json
	mkdir -p $(WEB_ASSETS)
	cp web/package.json web/package-lock.json $(WEB_ASSETS)/
	$(NPM) ci --prefix $(WEB_ASSETS) --ignore-scripts --no-audit --no-fund --loglevel=error
	touch $@

# --auto goes first: its one forward pass caches every layer and pooling of the training set
# (and the chosen layers of the test set), so the recipe's run and the mean run after it read
# their vectors from the cache instead of running the encoder again.
demo: $(BIN)/.installed $(WEB_ASSETS)/.installed
	$(BIN)/bertprobe train data/sst2/train.tsv --test data/sst2/test.tsv --encoder minilm \
		--auto --out $(DEMO_OUT)/sst2-minilm-auto
	$(BIN)/bertprobe train data/sst2/train.tsv --test data/sst2/test.tsv --encoder minilm \
		--pooling cls --layer -1 --out $(DEMO_OUT)/sst2-minilm-cls
	$(BIN)/bertprobe train data/sst2/train.tsv --test data/sst2/test.tsv --encoder minilm \
		--pooling mean --layer -1 --out $(DEMO_OUT)/sst2-minilm-mean
	$(BIN)/bertprobe predict --model $(DEMO_OUT)/sst2-minilm-auto \
		"a gorgeous, witty, seductive movie" "the plot is a mess and the jokes fall flat"
	$(BIN)/bertprobe report --model $(DEMO_OUT)/sst2-minilm-auto data/sst2/test.tsv \
		--out report/sst2-minilm-auto
	$(BIN)/bertprobe export --model $(DEMO_OUT)/sst2-minilm-auto --out site/sst2-minilm-auto --web

# Opt-in: fine-tunes the bundled encoder on SST-2 (about a quarter of an hour on 2 cores).
demo-finetune: $(BIN)/.installed
	$(BIN)/bertprobe train data/sst2/train.tsv --test data/sst2/test.tsv --encoder minilm \
		--pooling mean --finetune --out $(DEMO_OUT)/sst2-minilm-finetuned

# The tests on every core (pytest-xdist; the Ray tests share one worker, a local Ray at a
# time), then the few that hold elapsed time to a bound, alone on the machine (marker timing).
# The slowest 25 are listed after each run: the suite's budget is 15 minutes on 2 cores.
PARALLEL := -n auto --dist loadgroup

test: $(BIN)/.installed $(WEB_ASSETS)/.installed
	$(BIN)/python -m pytest $(PARALLEL) -m "not timing" --durations=25
	$(BIN)/python -m pytest -m timing

test-fast: $(BIN)/.installed $(WEB_ASSETS)/.installed
	$(BIN)/python -m pytest $(PARALLEL) -m "not slow and not timing"
	$(BIN)/python -m pytest -m "not slow and timing"

# Thousands of drawn command lines, fresh ones each run; prints how many it tried.
fuzz: $(BIN)/.installed
	BERTPROBE_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/python -m pytest -q -s \
		tests/test_cli_fuzz.py::test_fuzz_the_cli

lint: $(BIN)/.installed
	$(BIN)/ruff check src tests bench examples docs/*.py

# Lint (with the static security scan: ruff's S rules, see pyproject.toml), formatting, types
# and the package's layers (import-linter: the contracts in pyproject.toml); CI runs this
# before the tests.
check: lint
	$(BIN)/ruff format --check src tests bench examples docs/*.py
	$(BIN)/mypy
	$(BIN)/lint-imports --no-logo

# The documentation site (mkdocs.yml) into build/site, warnings as errors. The command
# reference, the Python API, the HTTP API (the service's OpenAPI schema, from a model trained on
# 40 sentences as it builds) are generated from the code; a stale benchmark table fails it.
docs: $(BIN)/.installed
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

# Refresh the lock on purpose: the newest versions the ranges in pyproject.toml allow, what
# changed, then the whole test suite on them. Commit requirements.lock only if the tests pass
# (git checkout requirements.lock takes it back).
lock: $(BIN)/.installed
	$(PIP) install "$(UV_SPEC)"
	cp $(LOCK) $(LOCK).previous
	echo "$(TORCH_SPEC)" > $(VENV)/torch-constraint.txt
	$(BIN)/uv pip compile pyproject.toml --all-extras $(LOCK_UPGRADE) --quiet --python-version 3.11 \
		$(if $(FIND_LINKS),--find-links $(FIND_LINKS)) -c $(VENV)/torch-constraint.txt \
		--custom-compile-command "make lock" -o $(LOCK)
	@echo "changed in $(LOCK):"; diff $(LOCK).previous $(LOCK) | grep '^[<>] [a-z]' || echo "  nothing"
	rm -f $(LOCK).previous
	$(MAKE) test

# The newest versions pyproject.toml allows, in a scratch environment, against the fast tests:
# a release that breaks us shows up here before users meet it. Reports; never fails the caller.
check-latest: $(WEB_ASSETS)/.installed
	rm -rf .venv-latest
	$(PYTHON) -m venv .venv-latest
	.venv-latest/bin/python -m pip --disable-pip-version-check -q install "$(TORCH_SPEC)"
	.venv-latest/bin/python -m pip --disable-pip-version-check -q install --upgrade -e '.[dev]'
	@.venv-latest/bin/python -m pip freeze --exclude-editable > .venv-latest/versions.txt
	@echo "newest allowed versions that differ from $(LOCK):"
	@diff <(grep -v '^ *#' $(LOCK) | tr 'A-Z_' 'a-z-' | sort) \
		<(tr 'A-Z_' 'a-z-' < .venv-latest/versions.txt | sort) | grep '^>' || echo "  none"
	@if BERTPROBE_WEB_ASSETS=$(abspath $(WEB_ASSETS)) .venv-latest/bin/python -m pytest -m "not slow" -q -x \
		-p no:cacheprovider $(PARALLEL); then \
		echo "check-latest: the fast tests pass on the newest allowed versions"; \
	else \
		echo "check-latest: WARNING: the fast tests FAIL on the newest allowed versions above;"; \
		echo "  pin or fix before refreshing $(LOCK) (make lock)"; \
	fi

# Embedding and classifier benchmark against the recipe and its peers, then train --auto
# screened against exhaustive (prints tables).
bench: $(BIN)/.installed
	$(BIN)/python bench/embed_bench.py
	$(BIN)/python bench/auto_bench.py

# Load benchmarks of the HTTP service (loopback only): batching on against off (Python client),
# then wrk by backend, batching and connections, with an overload row.
bench-serve: $(BIN)/.installed
	$(BIN)/python bench/serve_load.py --model $(DEMO_OUT)/sst2-minilm-mean
	$(BIN)/python bench/serve_bench.py --model $(DEMO_OUT)/sst2-minilm-mean

# Fine-tuning against the probe and SetFit, full data and few-shot (prints a table; hours).
bench-finetune: $(BIN)/.installed
	$(BIN)/python bench/finetune_bench.py

# One process against --ray (2 actors x 1 thread) on 100k sentences, onnx-int8; a projection to
# clusters from the measured rates (prints a table; minutes).
bench-scale: $(BIN)/.installed
	$(BIN)/python bench/scale_bench.py

# The whole classifier exported to ONNX (fp32 and int8) against `bertprobe predict` on SST-2.
# Where the onnx-int8 encoder spends its time (ONNX Runtime's profiler, the GEMM ceiling), then
# each quantization choice measured on and off against the one shipped (prints tables).
bench-int8: $(BIN)/.installed
	$(BIN)/python bench/int8_profile.py
	$(BIN)/python bench/int8_variants.py

bench-export: $(BIN)/.installed
	$(BIN)/python bench/export_bench.py

# Peak memory of `train` on a file with one 6 MB line, truncating and in windows (minutes).
bench-long-line: $(BIN)/.installed
	$(BIN)/python bench/long_line_memory.py

# Few labels (docs/guides/few-labels.md): the probe, --contrastive, --contrastive --unlabelled at
# 8-64 labels a class x 5 draws, and 200 labels chosen by suggest or at random (about 2 hours).
bench-fewshot: $(BIN)/.installed
	$(BIN)/python bench/fewshot_bench.py --active --zero-shot
	# The topic set (not sentiment): the frozen rows and the zero-shot head, minutes in all;
	# its contrastive rows (--rows contrastive,zero-shot-prior-contrastive) take an hour more.
	$(BIN)/python bench/fewshot_bench.py --data fortunes --sizes 8,64 \
		--rows probe,zero-shot-prior --zero-shot --zero-shot-rows zero-shot
	$(BIN)/python bench/tables.py README.md docs/*.md docs/*/*.md

bench-explain: $(BIN)/.installed
	$(BIN)/python bench/explain_bench.py
	$(BIN)/python bench/tables.py README.md docs/*.md docs/*/*.md

# Which encoder: MiniLM against all-mpnet-base-v2 (installed from the registry's split-zip
# wheels into ~/.cache/bertprobe/bench), frozen mean, --auto and compare (about an hour).
bench-encoders: $(BIN)/.installed
	$(BIN)/python bench/encoders_bench.py
	$(BIN)/python bench/tables.py README.md docs/*.md docs/*/*.md

# Distillation: all-mpnet-base-v2 --auto (the teacher, trained first; fetched as bench-encoders
# does) into the bundled MiniLM, on the training texts and with altered copies of them; int8,
# the predict rate against the teacher, and a label-set teacher (about an hour and a half).
bench-distill: $(BIN)/.installed
	$(BIN)/python bench/distill_bench.py
	$(BIN)/python bench/tables.py README.md docs/*.md docs/*/*.md

# What --track costs: make demo's three runs with and without it, whole processes (minutes).
bench-tracking: $(BIN)/.installed
	$(BIN)/python bench/tracking_bench.py
	$(BIN)/python bench/tables.py README.md docs/*.md docs/*/*.md

# The page of export --web in Chromium: folder size, time to the first answer, sentences a second
# with and without WASM threads, beside the Python export's rate (bench/results/web.json).
bench-web: $(BIN)/.installed $(WEB_ASSETS)/.installed
	$(BIN)/python bench/web_bench.py --model $(DEMO_OUT)/sst2-minilm-mean

clean:
	rm -rf $(VENV) .venv-latest build dist src/*.egg-info .pytest_cache
