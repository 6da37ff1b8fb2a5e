"""Plain numpy references of the kernels: the expected outputs of every bundle.

They know nothing about the ISA, the tiling or the array: int8 operands are widened
to int64, summed exactly, wrapped to int32 (the accumulator's two's complement) and,
where the kernel has an int8 output, requantised with :func:`npuforge.isa.semantics.requant`
(the one documented rounding).
"""

from __future__ import annotations

import numpy as np

from ..isa.semantics import requant, wrap32

__all__ = ["matmul", "conv2d", "relu", "add", "maxpool", "conv_out_size", "pool_out_size"]


def matmul(a: np.ndarray, b: np.ndarray, quant: dict | None = None) -> np.ndarray:
    """``A @ B`` for int8 A [M, K] and B [K, N]: int32, or int8 through ``requant(**quant)``."""
    acc = wrap32(a.astype(np.int64) @ b.astype(np.int64))
    return acc if quant is None else requant(acc, **quant)


def conv_out_size(size: int, kernel: int, stride: int, pad: int) -> int:
    """Output extent of a convolution or pooling window along one axis."""
    return (size + 2 * pad - kernel) // stride + 1


def conv2d_acc(x: np.ndarray, w: np.ndarray, bias: np.ndarray, stride: int, pad: int) -> np.ndarray:
    """The int32 accumulator of a conv2d: NHWC x [H, W, Cin], w [KH, KW, Cin, Cout], bias [Cout]."""
    h, wd, cin = x.shape
    kh, kw, _, cout = w.shape
    oh, ow = conv_out_size(h, kh, stride, pad), conv_out_size(wd, kw, stride, pad)
    xp = np.zeros((h + 2 * pad, wd + 2 * pad, cin), np.int64)
    xp[pad:pad + h, pad:pad + wd] = x
    acc = np.zeros((oh, ow, cout), np.int64) + bias.astype(np.int64)
    for i in range(kh):
        for j in range(kw):
            patch = xp[i:i + stride * (oh - 1) + 1:stride, j:j + stride * (ow - 1) + 1:stride]
            acc += patch @ w[i, j].astype(np.int64)
    return wrap32(acc)


def conv2d(x: np.ndarray, w: np.ndarray, bias: np.ndarray, stride: int, pad: int, quant: dict) -> np.ndarray:
    """int8 conv2d output [OH, OW, Cout]: the int32 accumulator (bias included) requantised."""
    return requant(conv2d_acc(x, w, bias, stride, pad), **quant)


def relu(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, 0).astype(x.dtype)


def add(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Saturating int8 addition."""
    return np.clip(x.astype(np.int32) + y.astype(np.int32), -128, 127).astype(np.int8)


def pool_out_size(size: int, kernel: int, stride: int) -> int:
    """Output extent of an unpadded pooling window along one axis."""
    return conv_out_size(size, kernel, stride, 0)


def maxpool(x: np.ndarray, kh: int, kw: int, stride: int) -> np.ndarray:
    """Max over KHxKW windows of NHWC x [H, W, C] (no padding)."""
    h, w, _ = x.shape
    oh, ow = pool_out_size(h, kh, stride), pool_out_size(w, kw, stride)
    out = None
    for i in range(kh):
        for j in range(kw):
            win = x[i:i + stride * (oh - 1) + 1:stride, j:j + stride * (ow - 1) + 1:stride]
            out = win.copy() if out is None else np.maximum(out, win)
    return out
