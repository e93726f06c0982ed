# Every target installs .venv first when it is missing or older than requirements.txt,
# so a fresh clone needs no separate set-up step.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed

# TensorFlow's C++ INFO/WARNING start-up lines; errors still show. Override with TF_CPP_MIN_LOG_LEVEL=0.
export TF_CPP_MIN_LOG_LEVEL ?= 2

.DEFAULT_GOAL := help
.PHONY: help install test bench clean

help: ## List the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "} {printf "  make %-10s %s\n", $$1, $$2}'

$(INSTALLED): requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

install: $(INSTALLED) ## Create .venv/ and install the pinned requirements into it

test: $(INSTALLED) ## Run the whole test suite (PYTEST_ARGS="-k lrn" to select)
	$(PY) -m pytest $(PYTEST_ARGS)

bench: $(INSTALLED) ## Time the input pipeline against the training step (BENCH_FLAGS="--data_dir=...")
	$(PY) -m alexnet_tf.bench $(BENCH_FLAGS)

clean: ## Remove Python caches (keeps .venv/ and experiments/)
	find . -name __pycache__ -not -path './$(VENV)/*' -prune -exec rm -rf {} +
	rm -rf .pytest_cache
