"""FPGA SoC tops: the NPU core, on-chip memories and a UART host link per board (issue 6)."""
