"""Element-wise int8 kernels: ``relu`` (``max(x, 0)``) and ``add`` (saturating ``x + y``).

An element-wise operation does not care about the tensor's shape, so the ``M x N``
elements are treated as one flat run cut into accumulator rows of ``cols`` elements
(every lane busy, whatever N is); only the very last row may be shorter. Tiles of
``tile_rows`` rows go through the :class:`.pipeline.Pipeline`: ``load.acc8`` widens
the int8 data, ``vrelu`` / ``vadd`` work in int32, and ``store.acc8`` with multiplier
1 and shift 0 writes int8 back, saturating a sum outside [-128, 127].
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from .common import Emitter, KernelError, ceil_div, check_positive
from .pipeline import Pipeline

__all__ = ["EltwiseTiling", "default_tiling", "lower_relu", "lower_add"]

_TARGET_ROWS = 256


@dataclass(frozen=True)
class EltwiseTiling:
    """Accumulator rows (of ``cols`` elements) per tile, and whether two tiles are in flight."""
    tile_rows: int
    double_buffer: bool = True

    def check(self, shape: dict, config, operands: int = 1) -> None:
        """Raise :class:`KernelError` (a ValueError) naming the field that does not fit."""
        rows = _flat_rows(shape, config)
        if not 1 <= self.tile_rows <= rows:
            raise KernelError(f"tile_rows: must be in 1..{rows} (rows of {config.cols} elements), "
                              f"got {self.tile_rows}")
        sets = 2 if self.double_buffer else 1
        need = sets * operands * self.tile_rows
        if need > config.acc_rows:
            raise KernelError(f"tile_rows: {sets} buffer set(s) of {operands} x {self.tile_rows} rows need {need} "
                              f"accumulator rows, config '{config.name}' has acc_rows={config.acc_rows}")

    def to_json(self) -> dict:
        return asdict(self)


def _flat_rows(shape: dict, config) -> int:
    check_positive("eltwise", shape, ("m", "n"))
    return ceil_div(shape["m"] * shape["n"], config.cols)


def default_tiling(shape: dict, config, operands: int = 1) -> EltwiseTiling:
    rows = _flat_rows(shape, config)
    tile = min(rows, _TARGET_ROWS, config.acc_rows // (2 * operands))
    if tile < 1:
        raise KernelError(f"eltwise: accumulator too small (acc_rows={config.acc_rows})")
    return EltwiseTiling(ceil_div(rows, ceil_div(rows, tile)), True)


def _lower(em: Emitter, shape: dict, srcs: list[int], out_addr: int, tiling: EltwiseTiling | None,
           op: str) -> EltwiseTiling:
    cfg = em.config
    operands = len(srcs)
    tiling = tiling or default_tiling(shape, cfg, operands)
    tiling.check(shape, cfg, operands)
    C = cfg.cols
    total = shape["m"] * shape["n"]
    rows = ceil_div(total, C)
    last_len = total - (rows - 1) * C
    tr = tiling.tile_rows
    tiles = ceil_div(rows, tr)
    pipe = Pipeline(em, operands * tr, 2 if tiling.double_buffer else 1)
    r_src = [em.reg() for _ in srcs]
    r_out, r_one = em.reg(), em.reg()
    em.comment(f"{op} of {total} int8 elements: {tiles} tile(s) of {tr} rows x {C}")
    for r, addr in zip(r_src, srcs):
        em.set(r, addr, "input")
    em.set(r_out, out_addr, "output")
    em.set(r_one, 1, "requant multiplier 1: int8 saturation only")
    pipe.begin()

    def pieces(n: int, tail: int):
        """(first row, rows, len) of the DMA transfers of a tile of n rows, the last row tail long."""
        if tail == C:
            return [(0, n, C)]
        return ([(0, n - 1, C)] if n > 1 else []) + [(n - 1, 1, tail)]

    def body(v):
        n, tail = v
        loads = [("load.acc8", dict(acc=(pipe.r_set, s * tr + row), dram=(r, row * C), rows=k, len=ln, stride=C))
                 for s, r in enumerate(r_src) for row, k, ln in pieces(n, tail)]
        if op == "relu":
            ops = [("vrelu", dict(dst=(pipe.r_set, 0), src=(pipe.r_set, 0), rows=n))]
        else:
            ops = [("vadd", dict(dst=(pipe.r_set, 0), src=(pipe.r_set, tr), rows=n))]
        stores = [("store.acc8", dict(dram=(r_out, row * C), acc=(pipe.r_set, row), rows=k, len=ln, stride=C,
                                      qreg=r_one)) for row, k, ln in pieces(n, tail)]
        pipe.tile(loads, ops, stores)

    def variant(t):
        n = min(tr, rows - t * tr)
        return n, last_len if t == tiles - 1 else C

    em.for_range(tiles, variant, body, advances=[(r, tr * C) for r in r_src] + [(r_out, tr * C)])
    pipe.end()
    em.free(*r_src, r_out, r_one)
    return tiling


def lower_relu(em: Emitter, shape: dict, x_addr: int, y_addr: int, tiling: EltwiseTiling | None = None
               ) -> EltwiseTiling:
    """Append ``y = max(x, 0)`` for int8 [M, N] tensors to ``em`` (no ``halt``); returns the tiling used."""
    return _lower(em, shape, [x_addr], y_addr, tiling, "relu")


def lower_add(em: Emitter, shape: dict, x_addr: int, y_addr: int, out_addr: int,
              tiling: EltwiseTiling | None = None) -> EltwiseTiling:
    """Append ``out = clip(x + y, -128, 127)`` for int8 [M, N] tensors to ``em`` (no ``halt``)."""
    return _lower(em, shape, [x_addr, y_addr], out_addr, tiling, "add")


def random_inputs(shape: dict, rng: np.random.Generator, operands: int) -> dict[str, np.ndarray]:
    names = ("x", "y")[:operands]
    return {name: rng.integers(-128, 128, size=(shape["m"], shape["n"]), dtype=np.int8) for name in names}
