"""matmul: ``C[M, N] = A[M, K] @ B[K, N]``, int8 operands, int32 (or requantised int8) output.

Tensors are row-major in DRAM. The A block is copied with one strided load per
k-tile, by default interleaved with the first column tile's weight loads (see
``MatmulTiling.stream_a``). At the K edge the load's ``len`` is shorter than the
array and it zero-fills the rest of the row, so the stale weight rows past K
multiply zeros; weight tiles at the edges are loaded with fewer rows or a shorter ``len``; edge output tiles are
stored with a shorter ``len`` and fewer rows. See :mod:`.gemm` for the nest.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import numpy as np

from .common import Emitter, KernelError, ceil_div, check_positive
from .gemm import GemmSpec, GemmTiling, KLevel, Quant, buffer_slots, emit_gemm

__all__ = ["MatmulTiling", "default_tiling", "lower_matmul", "matmul_spec"]

# A matmul should stream many rows per weight tile (the preload is then a small overhead);
# beyond this the row block only costs scratchpad.
_TARGET_ROWS = 256


@dataclass(frozen=True)
class MatmulTiling:
    """How a matmul is tiled.

    Attributes
    ----------
    tile_m : rows of A (and C) per row block; every ``matmul`` instruction streams this many rows,
        and the block's activations stay in the scratchpad for all of N.
    tile_n : output columns per accumulator block, a multiple of the array's cols.
    double_buffer : two weight slots and two accumulator blocks (loads and stores overlap compute).
    stream_a : load a new activation block k-tile by k-tile inside the first column tile's k loop,
        so compute starts after one k-tile; otherwise the whole block is loaded before compute starts.
    """
    tile_m: int
    tile_n: int
    double_buffer: bool = True
    stream_a: bool = True

    def gemm(self) -> GemmTiling:
        return GemmTiling(self.tile_m, self.tile_n, self.double_buffer)

    def check(self, shape: dict, config) -> None:
        """Raise :class:`KernelError` (a ValueError) naming the field that does not fit."""
        _check_shape(shape)
        self.gemm().check(matmul_spec(shape, config, 0, 0, 0), config)

    def to_json(self) -> dict:
        return asdict(self)


def _check_shape(shape: dict) -> None:
    check_positive("matmul", shape, ("m", "k", "n"))


def matmul_spec(shape: dict, config, a_addr: int, b_addr: int, c_addr: int,
                quant: Quant | None = None) -> GemmSpec:
    """The GEMM nest's view of a matmul."""
    m, k, n = shape["m"], shape["k"], shape["n"]
    R = config.rows
    return GemmSpec(m=m, n=n, k_levels=(KLevel(ceil_div(k, R), R * n, k),), b_addr=b_addr, b_row_stride=n,
                    c_addr=c_addr, c_elem_bytes=1 if quant else 4, a_addr=a_addr, a_mstep=0, quant=quant)


def default_tiling(shape: dict, config) -> MatmulTiling:
    """A tiling that fits ``config``: long row blocks, all of N per accumulator block when it fits.

    Raises
    ------
    KernelError
        When not even one row of A for the whole of K fits the scratchpad.
    """
    _check_shape(shape)
    m, k, n = shape["m"], shape["k"], shape["n"]
    R, C = config.rows, config.cols
    kt, nt = ceil_div(k, R), ceil_div(n, C)
    slots = buffer_slots(config)
    cap = min((config.spad_rows - slots * R) // kt, config.acc_rows // slots, 0xFFFF)
    if cap < 1:
        raise KernelError(f"matmul: k={k} needs {kt} scratchpad rows per row of A plus {slots * R} for weights; "
                          f"config '{config.name}' has spad_rows={config.spad_rows}")
    blocks = ceil_div(m, min(m, cap, _TARGET_ROWS))
    tile_m = ceil_div(m, blocks)                     # balanced blocks: no nearly empty last block
    tiles_n = max(1, min(nt, config.acc_rows // (slots * tile_m)))
    return MatmulTiling(tile_m, tiles_n * C, slots == 2)


def lower_matmul(em: Emitter, shape: dict, a_addr: int, b_addr: int, c_addr: int,
                 tiling: MatmulTiling | None = None, quant: Quant | None = None) -> MatmulTiling:
    """Append a matmul to ``em`` (no ``halt``): the kernel library's lowering of ``C = A @ B``.

    Parameters
    ----------
    em : Emitter
    shape : dict with ``m``, ``k``, ``n``
    a_addr, b_addr, c_addr : DRAM byte addresses of A (int8 [M, K]), B (int8 [K, N]) and C
        (int32 [M, N], or int8 with ``quant``).
    tiling : MatmulTiling, optional
        :func:`default_tiling` when omitted; checked before anything is emitted.
    quant : Quant, optional
        Requantise to int8 on the store path (multiplier, shift, zero point, ReLU).

    Returns
    -------
    MatmulTiling : the tiling used.
    """
    cfg = em.config
    tiling = tiling or default_tiling(shape, cfg)
    tiling.check(shape, cfg)
    k, R = shape["k"], cfg.rows
    spec = matmul_spec(shape, cfg, a_addr, b_addr, c_addr, quant)
    spec = replace(spec, a_mstep=tiling.tile_m * k)
    tm = tiling.tile_m

    def a_loader(em: Emitter, regs, rows, _variant):
        em.set(regs.a_sp, 0)
        em.for_range(ceil_div(k, R), lambda t: min(R, k - t * R),
                     lambda w: em.emit("load.sp", sp=(regs.a_sp, 0), dram=(regs.a_dram, 0), rows=rows, len=w,
                                       stride=k),
                     advances=[(regs.a_dram, R), (regs.a_sp, tm)])

    def a_tile_loader(em: Emitter, regs, rows, k_len):
        em.emit("load.sp", sp=(regs.a_sp, 0), dram=(regs.a_dram, 0), rows=rows, len=k_len, stride=k)

    emit_gemm(em, spec, tiling.gemm(), a_loader, a_tile_loader=a_tile_loader if tiling.stream_a else None,
              a_tile_step=R)
    return tiling


def random_inputs(shape: dict, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Uniform int8 operands A [M, K] and B [K, N]."""
    a = rng.integers(-128, 128, size=(shape["m"], shape["k"]), dtype=np.int8)
    b = rng.integers(-128, 128, size=(shape["k"], shape["n"]), dtype=np.int8)
    return {"A": a, "B": b}
