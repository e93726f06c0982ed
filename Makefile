# Every target installs .venv first when it is missing or older than requirements.txt,
# so a fresh clone needs no separate set-up step.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed

# TensorFlow's C++ INFO/WARNING start-up lines; errors still show. Override with TF_CPP_MIN_LOG_LEVEL=0.
export TF_CPP_MIN_LOG_LEVEL ?= 2

.DEFAULT_GOAL := help
.PHONY: help install test test-quick train experiment evaluate tensorboard bench report clean

# make train: DATASET, DATA_DIR, EPOCHS, NORM, EXPERIMENT set the matching flags; FLAGS is passed
# through (e.g. FLAGS=--flagfile=experiments/cifar10_paper.flags). Without FLAGS and DATASET,
# experiments/sample.flags: the embedded CIFAR-10 sample, learning within minutes on 2 cores.
# DATASET=cifar10 alone runs the best measured CIFAR-10 recipe (experiments/cifar10_best.flags)
# into experiments/cifar10/; the paper's exact recipe is FLAGS=--flagfile=experiments/cifar10_paper.flags.
TRAIN_ARGS = $(FLAGS) $(if $(DATASET),--dataset=$(DATASET)) $(if $(DATA_DIR),--data_dir=$(DATA_DIR)) \
	$(if $(EPOCHS),--epochs=$(EPOCHS)) $(if $(NORM),--norm=$(NORM)) $(if $(EXPERIMENT),--experiment=$(EXPERIMENT))
ifeq ($(strip $(FLAGS)$(DATASET)),)
TRAIN_ARGS := --flagfile=experiments/sample.flags $(TRAIN_ARGS)
else ifeq ($(strip $(FLAGS))$(DATASET),cifar10)
TRAIN_ARGS := --flagfile=experiments/cifar10_best.flags --experiment=cifar10 $(TRAIN_ARGS)
endif

help: ## List the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "} {printf "  make %-10s %s\n", $$1, $$2}'

$(INSTALLED): requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m alexnet_tf.native_lrn
	touch $@

install: $(INSTALLED) ## Create .venv/ and install the pinned requirements into it

# The suite in TEST_WORKERS processes (pytest-xdist), a test file to each at a time so that a file's
# shared fixtures are built once. Two workers help even on 2 cores, since many tests wait on subprocess
# start-up (README gives the times). Each worker loads TensorFlow; TEST_WORKERS=0 runs one process.
TEST_WORKERS ?= 2
PYTEST := $(PY) -m pytest --numprocesses=$(TEST_WORKERS) --dist=loadfile

test: $(INSTALLED) ## Run the whole test suite (PYTEST_ARGS="-k lrn" to select; TEST_WORKERS=0 for one process)
	$(PYTEST) $(PYTEST_ARGS)

test-quick: $(INSTALLED) ## The test suite without the slow tests (real training runs, subprocess batteries)
	$(PYTEST) -m "not slow" $(PYTEST_ARGS)

train: $(INSTALLED) ## Train (DATASET=cifar10 DATA_DIR=... EPOCHS=... NORM=... FLAGS=...)
	$(PY) -m alexnet_tf.train $(TRAIN_ARGS)

experiment: $(INSTALLED) ## Run experiments/NAME.flags into experiments/NAME/ (NAME=cifar10_lrn, DATA_DIR=...)
	@test -n "$(NAME)" || { echo "error: give NAME=<experiment>, one of: $$(ls experiments/*.flags | xargs -n1 basename | sed 's/.flags$$//' | tr '\n' ' ')"; exit 2; }
	@test -f experiments/$(NAME).flags || { echo "error: experiments/$(NAME).flags does not exist"; exit 2; }
	$(PY) -m alexnet_tf.train --flagfile=experiments/$(NAME).flags --experiment=$(NAME) $(if $(DATA_DIR),--data_dir=$(DATA_DIR)) $(FLAGS)

evaluate: $(INSTALLED) ## Evaluate a checkpoint or run directory (CHECKPOINT=experiments/sample/run1 [FLAGS=--ten_crop])
	@test -n "$(CHECKPOINT)" || { echo "error: give CHECKPOINT=<run directory or .weights.h5 file>"; exit 2; }
	$(PY) -m alexnet_tf.evaluate --checkpoint=$(CHECKPOINT) $(FLAGS)

tensorboard: $(INSTALLED) ## Serve TensorBoard over experiments/ (PORT=6006)
	$(VENV)/bin/tensorboard --logdir experiments --port $(or $(PORT),6006)

bench: $(INSTALLED) ## Time training steps (norms, towers, fp32/bf16; --xla), pipeline, end-to-end fit, matmul peak (BENCH_FLAGS="--quick" or "--json=PATH")
	$(PY) -m alexnet_tf.bench $(BENCH_FLAGS)

report: $(INSTALLED) ## Write experiments/README.md and its plots from the committed runs' results.json (no training)
	$(PY) -m alexnet_tf.report

clean: ## Remove Python caches (keeps .venv/ and experiments/)
	find . -name __pycache__ -not -path './$(VENV)/*' -prune -exec rm -rf {} +
	rm -rf .pytest_cache
