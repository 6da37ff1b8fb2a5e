"""Requantisation int32 -> int8, lane-parallel, bit-exact with :func:`npuforge.isa.semantics.requant`.

Interface (``Requant(lanes, latency=2)``)
-----------------------------------------
Inputs: ``data`` (``lanes`` x signed(32)), ``mult`` signed(32), ``shift`` unsigned(6),
``zp`` signed(8), ``relu`` (1 bit), ``valid`` (1 bit).
Outputs: ``result`` (``lanes`` x signed(8)), ``result_valid``.

Timing
------
Fixed latency ``LATENCY = latency`` cycles (default 2, class attribute
``Requant.LATENCY``): the ``result`` for the inputs (data *and* parameters)
presented in cycle ``t`` is on ``result`` in cycle ``t + LATENCY``, with
``result_valid`` high then if ``valid`` was high in cycle ``t``. The pipeline
never stalls and accepts new inputs (with new parameters) every cycle; the
parameters travel with the data, so they may change from one cycle to the next.

- ``latency=2``: register after the 64-bit product, register after round/shift/clamp.
- ``latency=1``: register after the 64-bit product; round/shift/clamp is combinational
  after it (the vector unit's two-stage form, ``vector_stages: 2``).
- ``latency=0``: combinational (``result`` follows the inputs in the same cycle).

Arithmetic (per lane)::

    p = x * mult                                   # 64-bit signed product
    if shift > 0: p = (p + (1 << (shift-1))) >> shift   # the add wraps at 64 bits, like the int64 reference
    if relu: p = max(p, 0)
    y = clamp(p + zp, -128, 127)

The rounding add wraps modulo 2**64 exactly as the numpy reference does: the
single input where it matters is ``x = mult = -2**31`` with ``shift = 63``
(``2**62 + 2**62`` wraps to ``-2**63``, giving ``-1`` before ReLU and the zero point).
"""

from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["Requant", "requant_signature"]

_LATENCIES = (0, 1, 2)


def requant_signature(lanes: int) -> wiring.Signature:
    """The requantiser's ports (as seen by the requantiser)."""
    return wiring.Signature({
        "data": In(data.ArrayLayout(signed(32), lanes)),
        "mult": In(signed(32)),
        "shift": In(unsigned(6)),
        "zp": In(signed(8)),
        "relu": In(1),
        "valid": In(1),
        "result": Out(data.ArrayLayout(signed(8), lanes)),
        "result_valid": Out(1),
    })


def _round_clamp(m, lane, p, shift, zp, relu):
    """Rounding shift, ReLU, zero point and saturation of one 64-bit product; returns the int8 value.

    Every intermediate is at most 64 bits wide, so that Verilator computes it with native
    integers (a 65-bit sum costs several times more); hence the reformulation below.
    """
    def sig(shape, what):
        return Signal(shape, name=f"{what}{lane}")

    corner, q, r, shifted, sat, biased, y = (
        sig(1, "corner"), sig(signed(63), "q"), sig(signed(64), "r"), sig(signed(64), "shifted"),
        sig(signed(10), "sat"), sig(signed(11), "biased"), sig(signed(8), "y"))
    # The one product outside 63 bits is 2**62 (x = mult = -2**31). Replacing it by 2**62 - 1 changes
    # no final result except at shift 63, where the reference's int64 rounding add wraps to -2**63.
    p63 = Mux(corner, (1 << 62) - 1, p[:63]).as_signed()
    m.d.comb += [
        corner.eq(p == (1 << 62)),
        # Round half up: (p + 2**(s-1)) >> s == ((p >> (s-1)) + 1) >> 1, with no wide sum.
        q.eq(p63 >> (shift - 1)[:6]),
        r.eq((q + 1) >> 1),
        shifted.eq(Mux(shift == 0, p63, Mux(corner & (shift == 63), -1, r))),
        # Values beyond +-511 clamp to the same int8 whatever the zero point: saturate early, stay narrow.
        sat.eq(Mux(shifted > 511, 511, Mux(shifted < -512, -512, shifted[:10].as_signed()))),
        biased.eq(Mux(relu & sat[9], 0, sat) + zp),
        y.eq(Mux(biased > 127, 127, Mux(biased < -128, -128, biased[:8].as_signed()))),
    ]
    return y


class Requant(wiring.Component):
    """A ``lanes``-wide requantiser with a fixed pipeline latency (see the module docstring).

    Parameters
    ----------
    lanes : int
        Number of int32 -> int8 lanes, 1..256.
    latency : int
        Pipeline depth in cycles: 0, 1 or 2.

    Raises
    ------
    ValueError
        If ``lanes`` or ``latency`` is out of range.
    """

    LATENCY = 2

    def __new__(cls, *args, **kwargs):
        # Validate before the object exists, so a rejected one does not warn "never elaborated".
        cls._check(*args, **kwargs)
        return super().__new__(cls)

    @staticmethod
    def _check(lanes, latency=2):
        if not (isinstance(lanes, int) and 1 <= lanes <= 256):
            raise ValueError(f"Requant lanes must be an integer in 1..256, not {lanes!r}")
        if latency not in _LATENCIES:
            raise ValueError(f"Requant latency must be one of {_LATENCIES}, not {latency!r}")

    def __init__(self, lanes: int, latency: int = 2):
        self.lanes = lanes
        self.LATENCY = latency
        super().__init__(requant_signature(lanes))

    def elaborate(self, platform):
        m = Module()
        # Stage 1: products (registered when latency >= 1), with the parameters travelling alongside.
        stage1 = "comb" if self.LATENCY == 0 else "sync"
        prods = [Signal(signed(64), name=f"prod{i}") for i in range(self.lanes)]
        shift = Signal(unsigned(6))
        zp = Signal(signed(8))
        relu = Signal()
        valid1 = Signal()
        m.d[stage1] += [p.eq(self.data[i] * self.mult) for i, p in enumerate(prods)]
        m.d[stage1] += [shift.eq(self.shift), zp.eq(self.zp), relu.eq(self.relu), valid1.eq(self.valid)]

        # Stage 2: round, shift, ReLU, zero point, saturate (registered when latency == 2).
        stage2 = "sync" if self.LATENCY == 2 else "comb"
        for i, p in enumerate(prods):
            m.d[stage2] += self.result[i].eq(_round_clamp(m, i, p, shift, zp, relu))
        m.d[stage2] += self.result_valid.eq(valid1)
        return m
