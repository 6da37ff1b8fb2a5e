"""conv2d: NHWC int8 ``x[H, W, Cin]`` (batch 1) with ``w[KH, KW, Cin, Cout]`` int8 and an int32
bias ``[Cout]``, stride and zero padding, to int8 ``y[OH, OW, Cout]`` through requant (optional ReLU).

Implicit GEMM, no host-side im2col: output pixels are the GEMM rows (``M = OH*OW``),
``K = KH*KW*Cin`` in (tap, input channel) order, ``N = Cout``. The A block of a group of
``tile_oh`` output rows is gathered straight from the NHWC input with strided DMA: for
each output row, tap and chunk of input channels, one load of ``OW`` rows with DRAM
stride ``stride*Cin``. Padding never reads DRAM: the output columns whose input column
falls outside the image are zero-filled (``len=0`` loads) around the real load, and a
tap whose input row is outside the image zero-fills all ``OW`` rows. Row groups with the
same padding pattern (all the middle ones) share one loop body. The bias is loaded into
the accumulator block (``load.acc32`` with DRAM stride 0) before the first matmul, so
every matmul accumulates.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from ..golden import conv_out_size
from .common import Emitter, KernelError, ceil_div, check_positive
from .gemm import GemmSpec, GemmTiling, KLevel, Quant, buffer_slots, emit_gemm

__all__ = ["ConvTiling", "default_tiling", "lower_conv2d", "conv_dims"]

_TARGET_ROWS = 256


def conv_dims(shape: dict) -> tuple[int, int]:
    """(OH, OW) of a conv2d shape, checking the shape first."""
    check_positive("conv2d", shape, ("h", "w", "cin", "cout", "kh", "kw", "stride"))
    check_positive("conv2d", shape, ("pad",), minimum=0)
    oh = conv_out_size(shape["h"], shape["kh"], shape["stride"], shape["pad"])
    ow = conv_out_size(shape["w"], shape["kw"], shape["stride"], shape["pad"])
    if oh < 1 or ow < 1:
        raise KernelError(f"conv2d: a {shape['kh']}x{shape['kw']} kernel with pad={shape['pad']} does not fit "
                          f"a {shape['h']}x{shape['w']} input (output would be {oh}x{ow})")
    return oh, ow


@dataclass(frozen=True)
class ConvTiling:
    """How a conv2d is tiled.

    Attributes
    ----------
    tile_oh : output rows per row block (each matmul streams ``tile_oh * OW`` pixels).
    tile_n : output channels per accumulator block, a multiple of the array's cols.
    double_buffer : two weight slots and two accumulator blocks.
    """
    tile_oh: int
    tile_n: int
    double_buffer: bool = True

    def gemm(self, shape: dict) -> GemmTiling:
        return GemmTiling(self.tile_oh * conv_dims(shape)[1], self.tile_n, self.double_buffer)

    def check(self, shape: dict, config) -> None:
        """Raise :class:`KernelError` (a ValueError) naming the field that does not fit."""
        oh, ow = conv_dims(shape)
        if not 1 <= self.tile_oh <= oh:
            raise KernelError(f"tile_oh: must be in 1..{oh} (output rows), got {self.tile_oh}")
        if self.tile_oh * ow > 0xFFFF:
            raise KernelError(f"tile_oh: {self.tile_oh} rows x OW={ow} pixels exceed the 65535 rows "
                              f"one matmul can stream")
        self.gemm(shape).check(conv_spec(shape, config, 0, 0, 0, 0, None), config, what="tile_oh")

    def to_json(self) -> dict:
        return asdict(self)


def _k_tiles(shape: dict, config) -> int:
    return shape["kh"] * shape["kw"] * ceil_div(shape["cin"], config.rows)


def conv_spec(shape: dict, config, x_addr: int, w_addr: int, b_addr: int, y_addr: int,
              quant: Quant | None, tile_oh: int = 1) -> GemmSpec:
    """The GEMM nest's view of a conv2d."""
    oh, ow = conv_dims(shape)
    w, cin, cout = shape["w"], shape["cin"], shape["cout"]
    s, pad, R = shape["stride"], shape["pad"], config.rows
    taps = KLevel(shape["kh"] * shape["kw"], cin * cout)
    chunks = KLevel(ceil_div(cin, R), R * cout, cin)
    return GemmSpec(m=oh * ow, n=cout, k_levels=(taps, chunks), b_addr=w_addr, b_row_stride=cout,
                    c_addr=y_addr, c_elem_bytes=1, a_addr=x_addr - (pad * w + pad) * cin,
                    a_mstep=tile_oh * s * w * cin, init="bias", bias_addr=b_addr,
                    quant=quant or Quant(1, 0))


def default_tiling(shape: dict, config) -> ConvTiling:
    """Row blocks of about 256 pixels that fit the scratchpad, all of Cout per block when it fits."""
    oh, ow = conv_dims(shape)
    R, C = config.rows, config.cols
    slots = buffer_slots(config)
    kt = _k_tiles(shape, config)
    cap = min((config.spad_rows - slots * R) // (kt * ow), config.acc_rows // (slots * ow), 0xFFFF // ow)
    if cap < 1:
        raise KernelError(f"conv2d: one output row ({ow} pixels x {kt} k-tiles) does not fit the scratchpad "
                          f"(spad_rows={config.spad_rows}) and accumulator (acc_rows={config.acc_rows}) "
                          f"of config '{config.name}'")
    th = max(1, min(oh, cap, _TARGET_ROWS // ow))
    th = ceil_div(oh, ceil_div(oh, th))
    tiles_n = max(1, min(ceil_div(shape["cout"], C), config.acc_rows // (slots * th * ow)))
    return ConvTiling(th, tiles_n * C, slots == 2)


def lower_conv2d(em: Emitter, shape: dict, x_addr: int, w_addr: int, b_addr: int, y_addr: int, quant: Quant,
                 tiling: ConvTiling | None = None) -> ConvTiling:
    """Append a conv2d to ``em`` (no ``halt``).

    Parameters
    ----------
    em : Emitter
    shape : dict with h, w, cin, cout, kh, kw, stride, pad
    x_addr, w_addr, b_addr, y_addr : DRAM byte addresses of x (int8 [H, W, Cin]), w (int8
        [KH, KW, Cin, Cout]), bias (int32 [Cout]) and y (int8 [OH, OW, Cout]).
    quant : Quant
        Requantisation of the int32 sums (bias included) to int8.
    tiling : ConvTiling, optional
        :func:`default_tiling` when omitted; checked before anything is emitted.

    Returns
    -------
    ConvTiling : the tiling used.
    """
    cfg = em.config
    tiling = tiling or default_tiling(shape, cfg)
    tiling.check(shape, cfg)
    oh, ow = conv_dims(shape)
    h, w, cin = shape["h"], shape["w"], shape["cin"]
    kh_n, kw_n, s, pad, R = shape["kh"], shape["kw"], shape["stride"], shape["pad"], cfg.rows
    th = tiling.tile_oh
    tm = th * ow
    ct = ceil_div(cin, R)
    spec = conv_spec(shape, cfg, x_addr, w_addr, b_addr, y_addr, quant, th)

    def cols_in_image(kw: int) -> tuple[int, int]:
        """Output columns [lo, hi) whose input column ow*s + kw - pad lies in the image."""
        lo = max(0, ceil_div(pad - kw, s))
        hi = min(ow, (w - 1 + pad - kw) // s + 1)
        return lo, max(lo, hi)

    def pattern(mi: int):
        rows = min(th, oh - mi * th)
        return tuple(tuple(0 <= (mi * th + r) * s + kh - pad < h for kh in range(kh_n)) for r in range(rows))

    def a_loader(em: Emitter, regs, rows, valid):
        em.set(regs.a_sp, 0)
        for kh in range(kh_n):
            for kw in range(kw_n):
                em.for_range(ct, lambda c: min(R, cin - c * R), lambda cw: tap_rows(regs, valid, kh, kw, cw),
                             advances=[(regs.a_dram, R), (regs.a_sp, tm)])
                em.add(regs.a_sp, ct * tm)

    def tap_rows(regs, valid, kh, kw, cw):
        lo, hi = cols_in_image(kw)

        def zero(first, count):
            if count:
                em.emit("load.sp", sp=(regs.a_sp, first), dram=0, rows=count, len=0, stride=0)

        def one_row(row_valid):
            if not row_valid or lo >= hi:
                zero(0, ow)
                return
            zero(0, lo)
            em.emit("load.sp", sp=(regs.a_sp, lo), dram=(regs.a_dram, (kh * w + lo * s + kw) * cin),
                    rows=hi - lo, len=cw, stride=s * cin)
            zero(hi, ow - hi)

        # Rows of the block whose tap row is inside the image share one loop body.
        em.for_range(len(valid), lambda r: valid[r][kh], one_row,
                     advances=[(regs.a_dram, s * w * cin), (regs.a_sp, ow)])

    emit_gemm(em, spec, tiling.gemm(shape), a_loader, pattern)
    return tiling


def random_inputs(shape: dict, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """int8 input and weights, int32 bias of a few thousand either way."""
    x = rng.integers(-128, 128, size=(shape["h"], shape["w"], shape["cin"]), dtype=np.int8)
    wt = rng.integers(-128, 128, size=(shape["kh"], shape["kw"], shape["cin"], shape["cout"]), dtype=np.int8)
    bias = rng.integers(-4096, 4097, size=(shape["cout"],), dtype=np.int32)
    return {"x": x, "w": wt, "bias": bias}


def choose_quant(acc: np.ndarray, zp: int = 0, relu: bool = False) -> Quant:
    """A requantisation that maps 2.5 standard deviations of ``acc`` to the int8 limit (a little
    saturation, most values spread over the range)."""
    spread = max(1.0, 2.5 * float(np.std(acc.astype(np.float64))))
    multiplier = 23169                              # odd, so rounding is exercised
    shift = max(0, min(63, int(np.ceil(np.log2(spread * multiplier / 127)))))
    return Quant(multiplier, shift, zp, relu)
