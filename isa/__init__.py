"""The NPU instruction set: its declaration, encoding, program images and reference simulator."""
