"""The vector unit: the row-wise arithmetic of MATMUL's accumulate and of VADD, VMAX, VRELU, VQUANT.

``VectorUnit(lanes, latency=0)`` is combinational: ``result`` follows the inputs in the same
cycle, and the compute engine registers it before the accumulator write.
``latency=1`` (``vector_stages: 2``) registers every op's result, the requantiser's after its
64-bit product (:class:`~npuforge.hw.requant.Requant` ``latency=1``): ``result`` in cycle
``t + 1`` belongs to the inputs of cycle ``t``; its rounding shift and saturation then
run combinationally in ``t + 1``. ``alu`` is the same registered result for every op but
VQUANT, without the requantiser in its path: the compute engine forwards from it.

Ports (``VectorUnit(lanes)``)
-----------------------------
Inputs: ``op`` (:class:`~npuforge.isa.spec.Opcode`), ``a`` (the destination row,
``acc[dst+i]``), ``b`` (the source row, ``acc[src+i]``), ``mm`` (the array's
``sp[src+i] @ W``), all ``lanes`` x signed(32); ``accumulate``; the requantisation
parameters ``mult``, ``shift``, ``zp``, ``relu``. Outputs: ``result`` (``lanes`` x signed(32));
``alu`` (the same, ``latency=1`` only, and not valid for VQUANT).

Per lane (int32, wrapping; ISA semantics of each instruction)::

    MATMUL: mm + (a if accumulate else 0)
    VADD:   a + b
    VMAX:   max(a, b)
    VRELU:  max(b, 0)
    VQUANT: requant(b, mult, shift, zp, relu), sign-extended to int32
    other opcodes: 0
"""

from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from ..isa.spec import Opcode
from .requant import Requant

__all__ = ["VectorUnit"]


class VectorUnit(wiring.Component):
    """Row arithmetic for the compute engine (see the module docstring).

    Parameters
    ----------
    lanes : int
        int32 lanes per row (the config's ``cols``), 1..256.
    latency : int
        0 (combinational) or 1 (see the module docstring).

    Raises
    ------
    ValueError
        If ``lanes`` or ``latency`` is out of range.
    """

    def __new__(cls, *args, **kwargs):
        cls._check(*args, **kwargs)  # before the object exists: a rejected one must not warn "never elaborated"
        return super().__new__(cls)

    @staticmethod
    def _check(lanes, latency=0):
        if not (isinstance(lanes, int) and 1 <= lanes <= 256):
            raise ValueError(f"VectorUnit lanes must be an integer in 1..256, not {lanes!r}")
        if latency not in (0, 1):
            raise ValueError(f"VectorUnit latency must be 0 or 1, not {latency!r}")

    def __init__(self, lanes: int, latency: int = 0):
        self.lanes = lanes
        self.LATENCY = latency
        row = data.ArrayLayout(signed(32), lanes)
        super().__init__({
            "op": In(Opcode, init=Opcode.NOP),  # the enum has no 0 (zero words trap)
            "a": In(row),
            "b": In(row),
            "mm": In(row),
            "accumulate": In(1),
            "mult": In(signed(32)),
            "shift": In(unsigned(6)),
            "zp": In(signed(8)),
            "relu": In(1),
            "result": Out(row),
            **({"alu": Out(row)} if latency else {}),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.requant = rq = Requant(self.lanes, latency=self.LATENCY)
        m.d.comb += [
            rq.data.eq(self.b), rq.mult.eq(self.mult), rq.shift.eq(self.shift),
            rq.zp.eq(self.zp), rq.relu.eq(self.relu), rq.valid.eq(self.op == Opcode.VQUANT),
        ]
        stage = "sync" if self.LATENCY else "comb"
        alu = self.alu if self.LATENCY else self.result
        for i in range(self.lanes):
            a, b, out = self.a[i], self.b[i], alu[i]
            # Every result is assigned to a 32-bit lane: the int32 wrap of the sums.
            with m.Switch(self.op):
                with m.Case(Opcode.MATMUL):
                    m.d[stage] += out.eq(self.mm[i] + Mux(self.accumulate, a, 0))
                with m.Case(Opcode.VADD):
                    m.d[stage] += out.eq(a + b)
                with m.Case(Opcode.VMAX):
                    m.d[stage] += out.eq(Mux(a > b, a, b))
                with m.Case(Opcode.VRELU):
                    m.d[stage] += out.eq(Mux(b[31], 0, b))
                with m.Case(Opcode.VQUANT):
                    if not self.LATENCY:
                        m.d.comb += out.eq(rq.result[i])
                with m.Default():
                    m.d[stage] += out.eq(0)
        if self.LATENCY:
            quant = Signal()
            m.d.sync += quant.eq(self.op == Opcode.VQUANT)
            for i in range(self.lanes):
                m.d.comb += self.result[i].eq(Mux(quant, rq.result[i], self.alu[i]))
        return m
