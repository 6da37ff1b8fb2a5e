"""The kernel registry: for each kernel kind, its shape parameters and how to build a runnable case
(random inputs from a seed, the program, the expected outputs from :mod:`npuforge.compiler.golden`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .. import golden
from . import conv2d, eltwise, matmul, maxpool
from .common import DramLayout, Emitter, KernelError, TensorInfo
from .gemm import Quant

__all__ = ["KernelDef", "BundleContents", "KERNELS", "full_shape"]


@dataclass
class BundleContents:
    """Everything a bundle holds, in memory (see :mod:`npuforge.compiler.bundle`)."""
    kernel: str
    shape: dict[str, int]
    seed: int
    config: object
    tiling: dict
    emitter: Emitter
    dram: np.ndarray                    # initial DRAM image, uint8, trimmed after the last input byte
    tensors: dict[str, TensorInfo]
    expected: dict[str, np.ndarray]
    macs: int
    quant: dict | None = None

    @property
    def builder(self):
        return self.emitter.b

    def run_reference(self, check_races: bool = False) -> dict[str, np.ndarray]:
        """Run the program on the reference simulator; the output tensors, by name.

        Raises
        ------
        SimError, RaceError
            From :func:`npuforge.isa.refsim.run`.
        """
        from ...isa import refsim
        r = refsim.run(self.builder.image(), self.dram, self.config, check_races=check_races)
        return {name: _read(r.dram, t) for name, t in self.tensors.items() if t.role == "output"}

    def first_mismatch(self, outputs: dict[str, np.ndarray]) -> dict | None:
        """``{"tensor", "index", "expected", "got"}`` of the first element that differs, or None."""
        for name, exp in self.expected.items():
            diff = np.argwhere(outputs[name] != exp)
            if diff.size:
                idx = tuple(int(i) for i in diff[0])
                return {"tensor": name, "index": list(idx), "expected": int(exp[idx]), "got": int(outputs[name][idx])}
        return None


def _read(dram: np.ndarray, t: TensorInfo) -> np.ndarray:
    raw = np.asarray(dram, np.uint8)[t.addr:t.addr + t.nbytes]
    return raw.view(np.dtype(t.dtype).newbyteorder("<")).reshape(t.shape).astype(t.dtype)


@dataclass(frozen=True)
class KernelDef:
    """A kernel kind: ``params`` are its shape parameters with their defaults (CLI options ``--name``)."""
    name: str
    params: dict[str, int]
    help: str
    build: Callable[..., BundleContents] = field(repr=False)


def full_shape(kind: str, shape: dict) -> dict[str, int]:
    """The kernel's defaults updated with ``shape``; unknown keys are an error naming them."""
    if kind not in KERNELS:
        raise KernelError(f"unknown kernel '{kind}'; kernels: {', '.join(sorted(KERNELS))}")
    params = KERNELS[kind].params
    unknown = [k for k in shape if k not in params]
    if unknown:
        raise KernelError(f"{kind}: unknown shape parameter(s) {', '.join(unknown)}; it takes "
                          f"{', '.join(params)}")
    out = dict(params)
    out.update({k: int(v) for k, v in shape.items()})
    return out


def _finish(kind: str, shape: dict, em: Emitter) -> None:
    em.emit("halt")
    n, limit = len(em.b), em.config.imem_words
    if n > limit:
        dims = ", ".join(f"{k}={v}" for k, v in shape.items())
        raise KernelError(f"{kind} ({dims}): the program needs {n} instructions, more than the instruction "
                          f"memory of config '{em.config.name}' holds (imem_words={limit}); use a tiling with "
                          f"fewer edge cases or a larger imem_words")


def _contents(kind, shape, seed, config, tiling, em, layout, arrays, expected, macs, quant=None):
    _finish(kind, shape, em)
    return BundleContents(kind, dict(shape), seed, config, tiling.to_json(), em, layout.image(arrays),
                          dict(layout.tensors), expected, macs, quant)


def build_matmul(config, shape: dict, seed: int, *, tiling=None, quant: Quant | None = None) -> BundleContents:
    """A random matmul; int32 output, or int8 through ``quant``."""
    shape = full_shape("matmul", shape)
    m, k, n = shape["m"], shape["k"], shape["n"]
    arrays = matmul.random_inputs(shape, np.random.default_rng(seed))
    lay = DramLayout(config)
    a = lay.add("A", (m, k), "int8", "input")
    b = lay.add("B", (k, n), "int8", "input")
    c = lay.add("C", (m, n), "int8" if quant else "int32", "output")
    em = Emitter(config)
    used = matmul.lower_matmul(em, shape, a, b, c, tiling, quant)
    qd = quant.to_json() if quant else None
    expected = {"C": golden.matmul(arrays["A"], arrays["B"], qd)}
    return _contents("matmul", shape, seed, config, used, em, lay, arrays, expected, m * k * n, qd)


def build_conv2d(config, shape: dict, seed: int, *, tiling=None, relu: bool = False, zp: int = 0
                 ) -> BundleContents:
    """A random conv2d with bias; the requantisation is chosen from the data (see conv2d.choose_quant)."""
    shape = full_shape("conv2d", shape)
    oh, ow = conv2d.conv_dims(shape)
    arrays = conv2d.random_inputs(shape, np.random.default_rng(seed))
    acc = golden.conv2d_acc(arrays["x"], arrays["w"], arrays["bias"], shape["stride"], shape["pad"])
    quant = conv2d.choose_quant(acc, zp, relu)
    lay = DramLayout(config)
    x = lay.add("x", arrays["x"].shape, "int8", "input")
    w = lay.add("w", arrays["w"].shape, "int8", "input")
    b = lay.add("bias", arrays["bias"].shape, "int32", "input")
    y = lay.add("y", (oh, ow, shape["cout"]), "int8", "output")
    em = Emitter(config)
    used = conv2d.lower_conv2d(em, shape, x, w, b, y, quant, tiling)
    qd = quant.to_json()
    expected = {"y": golden.conv2d(arrays["x"], arrays["w"], arrays["bias"], shape["stride"], shape["pad"], qd)}
    macs = oh * ow * shape["cout"] * shape["kh"] * shape["kw"] * shape["cin"]
    return _contents("conv2d", shape, seed, config, used, em, lay, arrays, expected, macs, qd)


def _build_eltwise(kind: str, config, shape: dict, seed: int, tiling) -> BundleContents:
    shape = full_shape(kind, shape)
    operands = 1 if kind == "relu" else 2
    arrays = eltwise.random_inputs(shape, np.random.default_rng(seed), operands)
    lay = DramLayout(config)
    addrs = [lay.add(name, arr.shape, "int8", "input") for name, arr in arrays.items()]
    out = lay.add("out", (shape["m"], shape["n"]), "int8", "output")
    em = Emitter(config)
    if kind == "relu":
        used = eltwise.lower_relu(em, shape, addrs[0], out, tiling)
        expected = {"out": golden.relu(arrays["x"])}
    else:
        used = eltwise.lower_add(em, shape, addrs[0], addrs[1], out, tiling)
        expected = {"out": golden.add(arrays["x"], arrays["y"])}
    return _contents(kind, shape, seed, config, used, em, lay, arrays, expected, 0)


def build_relu(config, shape: dict, seed: int, *, tiling=None) -> BundleContents:
    return _build_eltwise("relu", config, shape, seed, tiling)


def build_add(config, shape: dict, seed: int, *, tiling=None) -> BundleContents:
    return _build_eltwise("add", config, shape, seed, tiling)


def build_maxpool(config, shape: dict, seed: int, *, tiling=None) -> BundleContents:
    shape = full_shape("maxpool", shape)
    oh, ow = maxpool.pool_dims(shape)
    arrays = maxpool.random_inputs(shape, np.random.default_rng(seed))
    lay = DramLayout(config)
    x = lay.add("x", arrays["x"].shape, "int8", "input")
    y = lay.add("y", (oh, ow, shape["cin"]), "int8", "output")
    em = Emitter(config)
    used = maxpool.lower_maxpool(em, shape, x, y, tiling)
    expected = {"y": golden.maxpool(arrays["x"], shape["kh"], shape["kw"], shape["stride"])}
    return _contents("maxpool", shape, seed, config, used, em, lay, arrays, expected, 0)


KERNELS: dict[str, KernelDef] = {
    "matmul": KernelDef("matmul", {"m": 64, "k": 64, "n": 64},
                        "C[M,N] = A[M,K] @ B[K,N], int8 operands, int32 output", build_matmul),
    "conv2d": KernelDef("conv2d", {"h": 16, "w": 16, "cin": 16, "cout": 16, "kh": 3, "kw": 3, "stride": 1, "pad": 1},
                        "NHWC int8 conv2d with int32 bias, requantised to int8 (implicit GEMM)", build_conv2d),
    "relu": KernelDef("relu", {"m": 64, "n": 64}, "int8 [M,N] -> max(x, 0)", build_relu),
    "add": KernelDef("add", {"m": 64, "n": 64}, "int8 [M,N] + int8 [M,N], saturating", build_add),
    "maxpool": KernelDef("maxpool", {"h": 16, "w": 16, "cin": 16, "kh": 2, "kw": 2, "stride": 2},
                         "NHWC int8 max pooling, no padding", build_maxpool),
}
