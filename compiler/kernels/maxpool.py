"""maxpool: NHWC int8 ``x[H, W, C]``, window ``KH x KW``, stride, no padding -> int8 ``[OH, OW, C]``.

A tile is ``tile_oh`` output rows (or, for wide windows, ``tile_ow`` columns of
one output row) of one chunk of ``cols`` channels. For each window
tap ``(kh, kw)`` and output row, one ``load.acc8`` gathers the tap's input pixel for
every output column (``OW`` rows, DRAM stride ``stride*C``) into the tap's slice of the
buffer set; ``vmax`` folds the taps into the first slice and ``store.acc8`` (multiplier
1) writes the int8 result, one output pixel per row (DRAM stride ``C``). Tiles go
through the :class:`.pipeline.Pipeline`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from ..golden import pool_out_size
from .common import Emitter, KernelError, ceil_div, check_positive
from .pipeline import Pipeline

__all__ = ["PoolTiling", "default_tiling", "lower_maxpool", "pool_dims"]

_TARGET_ROWS = 256


def pool_dims(shape: dict) -> tuple[int, int]:
    """(OH, OW) of a maxpool shape, checking the shape first."""
    check_positive("maxpool", shape, ("h", "w", "cin", "kh", "kw", "stride"))
    oh = pool_out_size(shape["h"], shape["kh"], shape["stride"])
    ow = pool_out_size(shape["w"], shape["kw"], shape["stride"])
    if oh < 1 or ow < 1:
        raise KernelError(f"maxpool: a {shape['kh']}x{shape['kw']} window does not fit a "
                          f"{shape['h']}x{shape['w']} input")
    return oh, ow


@dataclass(frozen=True)
class PoolTiling:
    """Output rows (and columns) per tile, and whether two tiles are in flight.

    ``tile_ow`` None means whole output rows (then a tile is stored with one instruction).
    """
    tile_oh: int
    double_buffer: bool = True
    tile_ow: int | None = None

    def width(self, shape: dict) -> int:
        return pool_dims(shape)[1] if self.tile_ow is None else self.tile_ow

    def check(self, shape: dict, config) -> None:
        """Raise :class:`KernelError` (a ValueError) naming the field that does not fit."""
        oh, ow = pool_dims(shape)
        if not 1 <= self.tile_oh <= oh:
            raise KernelError(f"tile_oh: must be in 1..{oh} (output rows), got {self.tile_oh}")
        tw = self.width(shape)
        if not 1 <= tw <= ow:
            raise KernelError(f"tile_ow: must be in 1..{ow} (output columns), got {tw}")
        if tw < ow and self.tile_oh > 1:
            raise KernelError(f"tile_oh: must be 1 when tile_ow ({tw}) is narrower than the output ({ow}), "
                              f"got {self.tile_oh}")
        sets = 2 if self.double_buffer else 1
        taps = shape["kh"] * shape["kw"]
        need = sets * taps * self.tile_oh * tw
        if need > config.acc_rows:
            field = "tile_oh" if tw == ow else "tile_ow"
            raise KernelError(f"{field}: {sets} buffer set(s) of {taps} taps x {self.tile_oh} rows x {tw} columns "
                              f"need {need} accumulator rows, config '{config.name}' has acc_rows={config.acc_rows}")
        if self.tile_oh * tw > 0xFFFF:
            raise KernelError(f"tile_oh: {self.tile_oh} x {tw} rows exceed the 65535-row limit of one instruction")

    def to_json(self) -> dict:
        return asdict(self)


def default_tiling(shape: dict, config) -> PoolTiling:
    oh, ow = pool_dims(shape)
    taps = shape["kh"] * shape["kw"]
    per_set = config.acc_rows // 2
    if taps > per_set:
        raise KernelError(f"maxpool: a {shape['kh']}x{shape['kw']} window ({taps} taps) does not fit two buffer "
                          f"sets in acc_rows={config.acc_rows} of config '{config.name}'")
    if taps * ow > per_set:
        tw = per_set // taps
        return PoolTiling(1, True, ceil_div(ow, ceil_div(ow, tw)))
    th = min(oh, max(1, _TARGET_ROWS // ow), per_set // (taps * ow), 0xFFFF // ow)
    return PoolTiling(ceil_div(oh, ceil_div(oh, th)), True)


def lower_maxpool(em: Emitter, shape: dict, x_addr: int, y_addr: int, tiling: PoolTiling | None = None
                  ) -> PoolTiling:
    """Append a maxpool to ``em`` (no ``halt``); returns the tiling used.

    Parameters
    ----------
    shape : dict with h, w, cin, kh, kw, stride
    x_addr, y_addr : DRAM byte addresses of x (int8 [H, W, C]) and y (int8 [OH, OW, C])
    """
    cfg = em.config
    tiling = tiling or default_tiling(shape, cfg)
    tiling.check(shape, cfg)
    oh, ow = pool_dims(shape)
    w, c, s = shape["w"], shape["cin"], shape["stride"]
    kh_n, kw_n = shape["kh"], shape["kw"]
    C = cfg.cols
    th, tw = tiling.tile_oh, tiling.width(shape)
    tm = th * tw
    taps = [(kh, kw) for kh in range(kh_n) for kw in range(kw_n)]
    pipe = Pipeline(em, len(taps) * tm, 2 if tiling.double_buffer else 1)
    r_x, r_y, r_one = em.reg(), em.reg(), em.reg()
    em.comment(f"maxpool {shape['h']}x{w}x{c} window {kh_n}x{kw_n} stride {s}: tiles of {th}x{tw} outputs")
    em.set(r_x, x_addr, "input")
    em.set(r_y, y_addr, "output")
    em.set(r_one, 1, "requant multiplier 1")
    pipe.begin()

    def tile(rows: int, cols: int, cw: int):
        def loads():
            for t, (kh, kw) in enumerate(taps):
                em.for_range(rows, lambda r: 0,
                             lambda _: em.emit("load.acc8", acc=(pipe.r_set, t * tm), dram=(r_x, (kh * w + kw) * c),
                                               rows=cols, len=cw, stride=s * c),
                             advances=[(r_x, s * w * c), (pipe.r_set, cols)])
        ops = [("vmax", dict(dst=(pipe.r_set, 0), src=(pipe.r_set, t * tm), rows=rows * cols))
               for t in range(1, len(taps))]
        # Whole output rows are contiguous in y; a narrower tile is stored row by row.
        pieces = [(0, rows * cols)] if cols == ow else [(r, cols) for r in range(rows)]
        stores = [("store.acc8", dict(dram=(r_y, r * ow * c), acc=(pipe.r_set, r * cols), rows=n, len=cw, stride=c,
                                      qreg=r_one)) for r, n in pieces]
        pipe.tile(loads, ops, stores)

    def col_block(rows: int, cols: int):
        em.for_range(ceil_div(c, C), lambda j: min(C, c - j * C), lambda cw: tile(rows, cols, cw),
                     advances=[(r_x, C), (r_y, C)])

    def row_block(rows: int):
        em.for_range(ceil_div(ow, tw), lambda j: min(tw, ow - j * tw), lambda cols: col_block(rows, cols),
                     advances=[(r_x, tw * s * c), (r_y, tw * c)])

    em.for_range(ceil_div(oh, th), lambda i: min(th, oh - i * th), row_block,
                 advances=[(r_x, th * s * w * c), (r_y, th * ow * c)])
    pipe.end()
    em.free(r_x, r_y, r_one)
    return tiling


def random_inputs(shape: dict, rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {"x": rng.integers(-128, 128, size=(shape["h"], shape["w"], shape["cin"]), dtype=np.int8)}
