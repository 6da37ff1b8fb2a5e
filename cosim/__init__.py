"""Co-simulation of the NPU: Verilator builds, the cocotb bench, run_rtl, random differential programs.

Modules: :mod:`.dram_model` (simulation DRAM), :mod:`.simtop` (core + DRAM + loader),
:mod:`.build` (Verilog and Verilator builds, cached), :mod:`.bench` (the cocotb test),
:mod:`.runner` (``run_rtl``, ``run_bundle_rtl``), :mod:`.randprog` (random programs).
Nothing is imported here, so that importing the package stays cheap.
"""
