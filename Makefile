# npuforge: the project's face. Every target only calls the CLI (or pytest).
# The first target that needs the environment creates .venv and installs the project.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

KERNEL ?= matmul
CONFIG ?= configs/8x8.yaml
FIDELITY ?= reference
OUT    ?= build/cosim/$(KERNEL)
SEED   ?= 0
# Shape variables are passed through when set: M K N for matmul, H W CIN COUT KH KW STRIDE PAD for conv2d.
SHAPE_VARS := M K N H W CIN COUT KH KW STRIDE PAD
SHAPE_ARGS := $(foreach v,$(SHAPE_VARS),$(if $($(v)),--$(shell echo $(v) | tr A-Z a-z) $($(v))))

export XDG_CACHE_HOME := $(CURDIR)/build/cache

.PHONY: help install test test-all cosim isa-doc fuzz clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'
	@echo "  variables: KERNEL=matmul|conv2d|relu|add|maxpool CONFIG=configs/8x8.yaml M= K= N= ... SEED="

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)  ## create .venv and install the toolkit with its test tools

install-llm: $(STAMP)  ## add the LLM extra (CPU torch 2.13.0 first, so pip does not pull a CUDA build)
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[llm]'

test: $(STAMP)  ## run the test suite (CI runs this)
	$(BIN)/python -m pytest -q -n 2

test-all: $(STAMP)  ## the test suite with the long runs (full fuzz and random-program counts)
	$(BIN)/python -m pytest -q -n 2 --runslow

cosim: $(STAMP)  ## generate a KERNEL bundle for CONFIG, run it, check it bit-exactly, print the figures
	$(BIN)/npuforge kernel $(KERNEL) -c $(CONFIG) --seed $(SEED) $(SHAPE_ARGS) -o $(OUT)
	$(BIN)/npuforge run $(OUT) --fidelity $(FIDELITY)

isa-doc: $(STAMP)  ## regenerate docs/isa.md from the ISA declaration
	$(BIN)/npuforge isa-doc

fuzz: $(STAMP)  ## fuzz the assembler with 100,000 random and mutated inputs
	$(BIN)/python -m npuforge.assembler.fuzz --count 100000

clean:  ## remove build outputs (keeps .venv)
	rm -rf build
