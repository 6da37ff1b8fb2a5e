"""Kernel library: lowering functions that emit NPU programs for tensor operations."""
