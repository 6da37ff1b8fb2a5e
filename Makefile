# npuforge: the project's face. Every target only calls the CLI (or pytest).
# The first target that needs the environment creates .venv and installs the project.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

KERNEL ?= matmul
CONFIG ?= configs/8x8.yaml
FIDELITY ?= rtl
# RTL engine: cocotb (waves) or harness (plain Verilator C++ main: same Verilog and report, faster; docs/cosim.md).
ENGINE ?= cocotb
# Toggle counting (energy, power) costs, 256^3 matmul (make bench-cosim): cocotb 1.2-1.8x on 4x4 and 8x8, 2.4x on
# 16x16; the harness engine (ENGINE=harness, counting in C++) 1.35-1.65x on all three. On by default.
POWER  ?= 1
OUT    ?= build/cosim/$(KERNEL)
SEED   ?= 0
# Shape variables are passed through when set: M K N for matmul, H W CIN COUT KH KW STRIDE PAD for conv2d.
SHAPE_VARS := M K N H W CIN COUT KH KW STRIDE PAD
SHAPE_ARGS := $(foreach v,$(SHAPE_VARS),$(if $($(v)),--$(shell echo $(v) | tr A-Z a-z) $($(v))))

export XDG_CACHE_HOME := $(CURDIR)/build/cache

FPGA_STAMP := $(VENV)/.installed-fpga
BOARD  ?= icebreaker
# CONFIG above defaults to a simulation preset; a bitstream uses the board's own design point
# (configs/icebreaker-4x4.yaml, configs/ulx3s-8x8.yaml) unless CONFIG is given on the command line.
BITSTREAM_CONFIG := $(if $(filter command line environment,$(origin CONFIG)),-c $(CONFIG))

.PHONY: help install install-fpga test test-all cosim bench-power bench-cycle bench-cosim bitstream isa-doc fuzz clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'
	@echo "  variables: KERNEL=matmul|conv2d|relu|add|maxpool CONFIG=configs/8x8.yaml M= K= N= ... SEED="
	@echo "             BOARD=icebreaker|ulx3s (bitstream)  WAVES=1  POWER=0 (cosim without toggle counting)"
	@echo "             ENGINE=cocotb|harness (rtl engine of cosim)  BREAKDOWN=1 (bitstream: per-block resources; Fmax on the ECP5)"

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
	$(BIN)/npuforge run $(OUT) --fidelity $(FIDELITY) --engine $(ENGINE) $(if $(filter 1,$(WAVES)),--waves) $(if $(filter 1,$(POWER)),--power,--no-power)

bench-power: $(STAMP)  ## what toggle counting costs: a 256^3 matmul on 4x4 and 8x8 RTL, with and without counting
	$(BIN)/npuforge power bench --configs 4x4,8x8

bench-cycle: $(STAMP)  ## cycle model vs RTL on the 256^3 matmul on 8x8, side by side (target: 100x faster)
	$(BIN)/python -m npuforge.compiler.cycle_model.bench --config 8x8

bench-cosim: $(STAMP)  ## RTL speed: C++ harness vs cocotb, with/without toggle counting, 256^3 matmul on 4x4, 8x8, 16x16
	$(BIN)/npuforge bench cosim --configs 4x4,8x8,16x16 --json build/bench/cosim.json

$(FPGA_STAMP): $(STAMP) pyproject.toml
	$(BIN)/pip install --quiet -e '.[fpga]'
	touch $(FPGA_STAMP)

install-fpga: $(FPGA_STAMP)  ## add the FPGA extra (amaranth-boards, YoWASP yosys/nextpnr, pyserial)

bitstream: $(FPGA_STAMP)  ## BOARD's bitstream (icebreaker|ulx3s) + report.md/json; link-only SoC if the NPU does not fit
	$(BIN)/npuforge bitstream --board $(BOARD) $(BITSTREAM_CONFIG) --or-link-only $(if $(BREAKDOWN),--breakdown)

isa-doc: $(STAMP)  ## regenerate docs/isa.md from the ISA declaration
	$(BIN)/npuforge isa-doc

fuzz: $(STAMP)  ## fuzz the assembler with 100,000 random and mutated inputs
	$(BIN)/python -m npuforge.assembler.fuzz --count 100000

clean:  ## remove build outputs (keeps .venv)
	rm -rf build
