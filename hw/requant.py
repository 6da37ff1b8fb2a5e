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

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["Requant", "requant_signature"]

_LATENCIES = (0, 1, 2)
_WINDOW = 11        # the lowest bit of ``2 P`` that can be the top (sign) bit of the shifted 12-bit window


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


def _round_clamp(m, lane, p, corner, shift, upper, corner_sat, zp, relu):
    """Rounding shift, ReLU, zero point and saturation of one product; returns the int8 value.

    No wide sum and no wide compare: with ``P`` the product's low 63 bits (the product itself
    except in the ``corner``, ``x = mult = -2**31``), ``q = P >> (shift - 1)`` for shift > 0 and
    ``q = 2 P`` for shift 0 are both ``(2 P) >> shift``; its rounded value ``(q + 1) >> 1``
    saturates to the same int8 as the reference whenever it lies outside +-1023, so only a
    12-bit window of ``2 P`` is shifted, and ``upper`` (a thermometer code of ``shift``, from
    the parameter stage) picks the bits from the window's top bit up, which must all equal
    the sign for ``q`` to fit the window. The corner's value depends on ``shift`` alone (``corner_sat``). Every
    intermediate stays within 64 bits, so that Verilator computes it with native integers.
    """
    def sig(shape, what):
        return Signal(shape, name=f"{what}{lane}")

    twice, window, fits, rounded, sat, biased, y = (
        sig(signed(64), "twice"), sig(signed(12), "window"), sig(1, "fits"), sig(signed(12), "rounded"),
        sig(signed(10), "sat"), sig(signed(11), "biased"), sig(signed(8), "y"))
    sign = twice[63]
    m.d.comb += [
        twice.eq(Cat(Const(0, 1), p[:63])),
        window.eq((twice >> shift)[:12]),
        fits.eq(~((twice[_WINDOW:63] ^ sign.replicate(63 - _WINDOW)) & upper).any()),
        rounded.eq((window + 1) >> 1),
        sat.eq(Mux(corner, corner_sat,
                   Mux(~fits, Mux(sign, -512, 511),
                       Mux(rounded > 511, 511, Mux(rounded < -512, -512, rounded[:10].as_signed()))))),
        biased.eq(Mux(relu & sat[9], 0, sat) + zp),
        y.eq(Mux(biased > 127, 127, Mux(biased < -128, -128, biased[:8].as_signed()))),
    ]
    return y


def _parameter_stage(shift):
    """What the rounding needs of ``shift`` alone: the thermometer ``upper`` and the corner's value.

    ``upper`` bit ``i`` is set when bit ``_WINDOW + i`` of ``2 P`` is the shifted 12-bit window's
    top bit or above it (``i >= shift``). The corner (``P = 2**62``) rounds to ``2**(62 - shift)``,
    saturated; at shift 63 the reference's int64 rounding add wraps, giving -1.
    """
    upper = Cat(*(Const(i, 6) >= shift for i in range(63 - _WINDOW)))
    corner_sat = Mux(shift <= 53, 511, Mux(shift == 63, -1, Const(1, 10) << (62 - shift)[:4]))
    return upper, corner_sat


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
        # Stage 1: products (registered when latency >= 1), with the parameters and what the rounding
        # needs of them alone travelling alongside.
        stage1 = "comb" if self.LATENCY == 0 else "sync"
        prods = [Signal(signed(64), name=f"prod{i}") for i in range(self.lanes)]
        corners = [Signal(name=f"corner{i}") for i in range(self.lanes)]
        shift = Signal(unsigned(6))
        upper = Signal(63 - _WINDOW)
        corner_sat = Signal(signed(10))
        zp = Signal(signed(8))
        relu = Signal()
        valid1 = Signal()
        int32_min = -2**31
        m.d[stage1] += [p.eq(self.data[i] * self.mult) for i, p in enumerate(prods)]
        m.d[stage1] += [c.eq((self.data[i] == int32_min) & (self.mult == int32_min)) for i, c in enumerate(corners)]
        upper_in, corner_sat_in = _parameter_stage(self.shift)
        m.d[stage1] += [shift.eq(self.shift), upper.eq(upper_in), corner_sat.eq(corner_sat_in),
                        zp.eq(self.zp), relu.eq(self.relu), valid1.eq(self.valid)]

        # Stage 2: round, shift, ReLU, zero point, saturate (registered when latency == 2).
        stage2 = "sync" if self.LATENCY == 2 else "comb"
        for i, p in enumerate(prods):
            m.d[stage2] += self.result[i].eq(_round_clamp(m, i, p, corners[i], shift, upper, corner_sat, zp, relu))
        m.d[stage2] += self.result_valid.eq(valid1)
        return m
