"""Arithmetic shared by every fidelity: requantisation and the int32 wrap.

The reference simulator, the numpy golden models of the kernels and the RTL
all follow these definitions bit for bit.

Requantisation (``requant``), for an int32 accumulator value ``x``, an int32
multiplier ``m`` (read from a register), a shift ``s`` in 0..63, a zero point
``zp`` in -128..127 and a ReLU flag::

    p = x * m                                  # 64-bit signed (exact: |x * m| <= 2**62)
    if s > 0: p = (p + (1 << (s - 1))) >> s    # round half up (towards +inf), arithmetic shift;
                                               # the add is 64-bit two's complement (see below)
    if relu:  p = max(p, 0)
    y = clamp(p + zp, -128, 127)               # saturate to int8

The rounding add is a 64-bit two's complement add, as in the hardware. It can wrap in
exactly one case: ``x = m = -2**31`` with ``s = 63`` (``p = 2**62``, ``p + 2**62`` wraps to
``-2**63``), which gives ``-1`` before ReLU and the zero point instead of ``1``.

Accumulation wraps modulo 2**32 (two's complement), never saturates.
"""

from __future__ import annotations

import numpy as np

__all__ = ["requant", "wrap32", "to_int32"]


def wrap32(x: np.ndarray) -> np.ndarray:
    """Wrap an int64 array to int32 two's complement."""
    return (np.asarray(x, dtype=np.int64) & 0xFFFFFFFF).astype(np.uint32).view(np.int32)


def to_int32(v: int) -> int:
    """A 32-bit register value as a signed int."""
    v &= 0xFFFFFFFF
    return v - (1 << 32) if v >> 31 else v


def requant(x: np.ndarray, multiplier: int, shift: int, zp: int = 0, relu: bool = False) -> np.ndarray:
    """Requantize int32 values to int8 (returned as int8), exactly as the hardware does.

    Parameters
    ----------
    x : array of int32
    multiplier : int32 multiplier (a 32-bit register value is read as signed)
    shift : rounding right shift, 0..63
    zp : output zero point, -128..127
    relu : clamp negative values (before the zero point is added)
    """
    if not 0 <= shift <= 63:
        raise ValueError(f"shift must be in 0..63, got {shift}")
    if not -128 <= zp <= 127:
        raise ValueError(f"zp must be in -128..127, got {zp}")
    m = to_int32(int(multiplier))
    p = np.asarray(x, dtype=np.int64) * np.int64(m)   # |x*m| <= 2**62: exact in int64
    if shift > 0:
        p = (p + (np.int64(1) << np.int64(shift - 1))) >> np.int64(shift)
    if relu:
        p = np.maximum(p, 0)
    return np.clip(p + zp, -128, 127).astype(np.int8)
