"""The tiled GEMM nest that matmul and conv2d lower to (weight-stationary).

``C[M, N] = A[M, K] @ B[K, N]``, where A is produced in the scratchpad by a
kernel-specific *A loader* (a plain strided copy for matmul, implicit-GEMM
tap loads for conv2d) and B is read from DRAM one ``rows x cols`` weight tile at a
time.

Memory plan (all sizes from the config)::

    scratchpad  [A block: k_tiles x tile_m rows][weight slot 0][weight slot 1]
    accumulator [acc block 0: n_tiles x tile_m rows][acc block 1]

An A block holds ``tile_m`` rows of A for the whole of K (k-tile ``t`` at rows
``t*tile_m ..``) and stays resident while every column block of the output is
computed, so each activation chunk is reused across all output column tiles and
each ``matmul`` streams ``tile_m`` rows. For every output block (``tile_m`` x
``tile_n``), each weight tile is loaded into a slot, preloaded and streamed; the
accumulator block is stored when its k loop is done.

Overlap, with dependency tokens (execution model in isa/execution.py):

- weight slots (double_buffer: two, swapped through registers): each weight load
  pops ``C2L`` and pushes ``L2C``; each ``preload`` pops ``L2C`` and pushes ``C2L``
  (its slot is free once the array holds the tile). The load of tile ``g`` thus
  waits only for the preload of tile ``g - slots``: loads run ahead of compute.
- accumulator blocks (double_buffer: two): compute pops ``S2C`` before writing a
  block and pushes ``C2S`` when it is complete; the store pops ``C2S`` and pushes
  ``S2C`` when the block is in DRAM. Storing block ``i`` overlaps computing ``i+1``.
- the A block (single buffer) is reloaded only at a new row block: a handshake
  (compute pushes slots+1 tokens, load pops slots+1) makes the load unit wait until
  compute has finished the previous block, then re-seeds the weight slots. Conv2d
  also loads its bias into the accumulator block behind this handshake.

The channels are seeded at the start and drained at the end, so the nest leaves
every token counter as it found it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Hashable

from .common import Emitter, KernelError, ceil_div

__all__ = ["Quant", "KLevel", "GemmSpec", "GemmTiling", "GemmRegs", "emit_gemm", "buffer_slots"]


@dataclass(frozen=True)
class Quant:
    """Requantisation of the int32 results on the store path (isa.semantics.requant)."""
    multiplier: int
    shift: int
    zp: int = 0
    relu: bool = False

    def to_json(self) -> dict:
        return {"multiplier": self.multiplier, "shift": self.shift, "zp": self.zp, "relu": self.relu}


@dataclass(frozen=True)
class KLevel:
    """One loop over K. The innermost level's iterations are k-tiles of ``extent`` rows of K."""
    count: int
    b_step: int         # DRAM bytes the weight address advances per iteration
    extent: int = 0     # innermost level: rows of K covered (the last tile may be shorter)


@dataclass(frozen=True)
class GemmSpec:
    """What the nest computes and where the operands live."""
    m: int
    n: int
    k_levels: tuple[KLevel, ...]
    b_addr: int             # weight tile (k=0, n=0)
    b_row_stride: int       # DRAM bytes between consecutive K rows of B
    c_addr: int
    c_elem_bytes: int       # 4: store.acc32; 1: store.acc8 with ``quant``
    a_addr: int             # initial value of the A loader's DRAM register
    a_mstep: int            # bytes that register advances per row block
    init: str = "zero"      # "zero": the first k-tile overwrites; "bias": bias rows loaded first
    bias_addr: int = 0      # int32 bias of N values, when init == "bias"
    quant: Quant | None = None

    @property
    def k_tiles(self) -> int:
        t = 1
        for lv in self.k_levels:
            t *= lv.count
        return t


def buffer_slots(config) -> int:
    """Buffers a default tiling can use: 2 (double buffering) when a token channel holds the
    credits of both (``token_depth >= 3``, the check in :meth:`GemmTiling.check`), else 1."""
    return 2 if config.token_depth >= 3 else 1


@dataclass(frozen=True)
class GemmTiling:
    """Rows per block (``tile_m``), output columns per accumulator block (``tile_n``), buffering."""
    tile_m: int
    tile_n: int
    double_buffer: bool = True

    def check(self, spec: GemmSpec, config, what: str = "tile_m") -> None:
        """Raise :class:`KernelError` naming the field when the tiling does not fit ``config``."""
        R, C = config.rows, config.cols
        if not 1 <= self.tile_m <= min(spec.m, 0xFFFF):
            raise KernelError(f"{what}: must be in 1..{min(spec.m, 0xFFFF)} (rows of the output), "
                              f"got {self.tile_m}")
        if self.tile_n < C or self.tile_n % C:
            raise KernelError(f"tile_n: must be a positive multiple of cols={C}, got {self.tile_n}")
        if self.tile_n > ceil_div(spec.n, C) * C:
            raise KernelError(f"tile_n: {self.tile_n} is wider than the output ({spec.n} columns, "
                              f"{ceil_div(spec.n, C) * C} padded to cols={C})")
        slots = 2 if self.double_buffer else 1
        need = spec.k_tiles * self.tile_m + slots * R
        if need > config.spad_rows:
            raise KernelError(f"{what}: {self.tile_m} rows x {spec.k_tiles} k-tiles + {slots} weight slot(s) of "
                              f"{R} rows need {need} scratchpad rows, config '{config.name}' has "
                              f"spad_rows={config.spad_rows}")
        need = slots * self.tile_m * (self.tile_n // C)
        if need > config.acc_rows:
            raise KernelError(f"tile_n: {slots} accumulator block(s) of {self.tile_m} rows x "
                              f"{self.tile_n // C} column tiles need {need} rows, config '{config.name}' has "
                              f"acc_rows={config.acc_rows}")
        if config.token_depth < slots + 1:
            raise KernelError(f"double_buffer: needs token_depth >= {slots + 1}, config '{config.name}' "
                              f"has {config.token_depth}")


@dataclass
class GemmRegs:
    """The nest's registers, for the A loader."""
    a_dram: int     # DRAM address register of the A loader (spec.a_addr, advanced per row block)
    a_sp: int       # free for the loader's scratchpad row pointer
    tmp: int


def emit_gemm(em: Emitter, spec: GemmSpec, tiling: GemmTiling,
              a_loader: Callable[[Emitter, GemmRegs, int, Hashable], None],
              m_variant: Callable[[int], Hashable] = lambda mi: None,
              a_tile_loader: Callable[[Emitter, GemmRegs, int, int], None] | None = None,
              a_tile_step: int = 0) -> None:
    """Append the tiled GEMM nest to ``em``.

    Parameters
    ----------
    em : Emitter
    spec : GemmSpec
    tiling : GemmTiling
        Checked against the config first.
    a_loader : callable
        ``a_loader(em, regs, rows, variant)`` emits the loads of one A block of ``rows`` rows into
        scratchpad rows ``t * tiling.tile_m + i`` (k-tile ``t``, row ``i``), reading DRAM through
        ``regs.a_dram``; it must restore the registers it advances.
    m_variant : callable
        ``m_variant(mi)`` distinguishes row blocks whose A loads differ (conv2d padding).
    a_tile_loader : callable, optional
        ``a_tile_loader(em, regs, rows, k_len)`` loads one k-tile of the A block (``k_len`` rows of K)
        into scratchpad rows ``regs.a_sp ..``. When given (one k level only), the A block is loaded
        tile by tile inside the first column tile's k loop instead of all at once by ``a_loader``,
        so that compute starts after the first k-tile instead of after the whole block.
    a_tile_step : int
        DRAM bytes ``regs.a_dram`` advances per k-tile for ``a_tile_loader``.
    """
    cfg = em.config
    tiling.check(spec, cfg)
    R, C = cfg.rows, cfg.cols
    tm, tnt = tiling.tile_m, tiling.tile_n // C
    slots = 2 if tiling.double_buffer else 1
    es = spec.c_elem_bytes
    if a_tile_loader is not None and len(spec.k_levels) != 1:
        raise KernelError("a_tile_loader needs a single k level")
    if (es == 1) != (spec.quant is not None):
        raise KernelError("c_elem_bytes=1 (int8 output) needs quant, and int32 output takes none")
    kt = spec.k_tiles
    n_tiles = ceil_div(spec.n, C)
    blocks_n = ceil_div(n_tiles, tnt)

    r_b, r_ad, r_cd, r_t, r_a, r_acc = (em.reg() for _ in range(6))
    r_s0 = em.reg()
    r_s1 = em.reg() if slots == 2 else r_s0
    r_c0 = em.reg()
    r_c1 = em.reg() if slots == 2 else r_c0
    regs = GemmRegs(r_ad, r_a, r_t)

    em.comment(f"gemm M={spec.m} N={spec.n} k_tiles={kt}: tile_m={tm} tile_n={tiling.tile_n} "
               f"double_buffer={tiling.double_buffer}")
    em.set(r_b, spec.b_addr, "weights")
    em.set(r_ad, spec.a_addr, "activations")
    em.set(r_cd, spec.c_addr, "output")
    em.set(r_s0, kt * tm, "weight slot")
    if slots == 2:
        em.set(r_s1, kt * tm + R, "second weight slot")
        em.set(r_c1, tm * tnt, "second accumulator block")
    em.set(r_c0, 0, "accumulator block")
    for _ in range(slots):
        em.tok_compute("push_prev", comment="weight slot free")
        em.tok_store("push_prev", comment="accumulator block free")

    def m_body(mv):
        mr = mv[0]

        def n_var(ni):
            first = ni * tnt
            widths = tuple(min(C, spec.n - (first + j) * C) for j in range(min(tnt, n_tiles - first)))
            return ni == 0, widths, ni if spec.init == "bias" else None

        def n_body(nv):
            load_a, widths, ni = nv
            em.tok_compute("pop_next", comment="wait: accumulator block stored")
            if load_a or spec.init == "bias":
                for _ in range(slots + 1):
                    em.tok_load("pop_next", comment="handshake: compute done with the A block")
                for _ in range(slots + 1):
                    em.tok_compute("push_prev")
            em.copy(r_acc, r_c0)
            if spec.init == "bias":
                for j, w in enumerate(widths):
                    em.emit("load.acc32", acc=(r_acc, j * tm), dram=spec.bias_addr + (ni * tnt + j) * C * 4,
                            rows=mr, len=w, stride=0, comment="bias")
            inline_a = load_a and a_tile_loader is not None
            if load_a and not inline_a:
                a_loader(em, regs, mr, mv[1])
            em.for_range(len(widths), lambda j: (widths[j], inline_a and j == 0), lambda v: n_tile(mr, *v),
                         advances=[(r_b, C), (r_acc, tm)])
            em.tok_compute("push_next", comment="accumulator block complete")
            em.tok_store("pop_prev", comment="wait: accumulator block complete")
            if spec.quant is not None:
                em.set(r_t, spec.quant.multiplier, "requant multiplier")
            em.copy(r_acc, r_c0)
            em.for_range(len(widths), lambda j: widths[j], lambda w: store(mr, w),
                         advances=[(r_cd, C * es), (r_acc, tm)])
            em.tok_store("push_prev", comment="accumulator block free")
            if slots == 2:
                em.swap(r_c0, r_c1, r_t)

        em.for_range(blocks_n, n_var, n_body, advances=[(r_b, tnt * C), (r_cd, tnt * C * es)])

    def n_tile(mr, w, with_a):
        em.set(r_a, 0)
        k_level(0, True, mr, w, with_a)

    def k_level(level, first, mr, w, with_a=False):
        lv = spec.k_levels[level]
        inner = 1
        for deeper in spec.k_levels[level + 1:]:
            inner *= deeper.count
        zero_first = spec.init == "zero"
        if level == len(spec.k_levels) - 1:
            a_adv = [(r_ad, a_tile_step)] if with_a else []
            em.for_range(lv.count, lambda i: (zero_first and first and i == 0, min(R, lv.extent - i * R)),
                         lambda v: k_tile(mr, w, *v, with_a), advances=[(r_b, lv.b_step), (r_a, tm)] + a_adv)
        else:
            em.for_range(lv.count, lambda i: zero_first and first and i == 0,
                         lambda f: k_level(level + 1, f, mr, w), advances=[(r_b, lv.b_step), (r_a, tm * inner)])

    def k_tile(mr, w, overwrite, kr, with_a):
        if with_a:
            a_tile_loader(em, regs, mr, kr)
        em.emit("load.sp", ("pop_next", "push_next"), sp=(r_s0, 0), dram=(r_b, 0), rows=kr, len=w,
                stride=spec.b_row_stride)
        em.emit("preload", ("pop_prev", "push_prev"), sp=(r_s0, 0))
        em.emit("matmul", acc=(r_acc, 0), sp=(r_a, 0), rows=mr, accumulate=not overwrite)
        if slots == 2:
            em.swap(r_s0, r_s1, r_t)

    def store(mr, w):
        if spec.quant is None:
            em.emit("store.acc32", dram=(r_cd, 0), acc=(r_acc, 0), rows=mr, len=w, stride=spec.n * 4)
        else:
            q = spec.quant
            em.emit("store.acc8", dram=(r_cd, 0), acc=(r_acc, 0), rows=mr, len=w, stride=spec.n,
                    qreg=r_t, shift=q.shift, zp=q.zp, relu=q.relu)

    blocks_m = ceil_div(spec.m, tm)
    em.for_range(blocks_m, lambda mi: (min(tm, spec.m - mi * tm), m_variant(mi)), m_body,
                 advances=[(r_ad, spec.a_mstep), (r_cd, tm * spec.n * es)])
    for _ in range(slots):
        em.tok_load("pop_next", comment="drain")
        em.tok_compute("pop_next", comment="drain")
    em.free(*{r_b, r_ad, r_cd, r_t, r_a, r_acc, r_s0, r_s1, r_c0, r_c1})
