"""The vector unit: the row-wise arithmetic of MATMUL's accumulate and of VADD, VMAX, VRELU, VQUANT.

Combinational (``LATENCY = 0``): ``result`` follows the inputs in the same cycle.
The compute engine registers it before the accumulator write.

Ports (``VectorUnit(lanes)``)
-----------------------------
Inputs: ``op`` (:class:`~npuforge.isa.spec.Opcode`), ``a`` (the destination row,
``acc[dst+i]``), ``b`` (the source row, ``acc[src+i]``), ``mm`` (the array's
``sp[src+i] @ W``), all ``lanes`` x signed(32); ``accumulate``; the requantisation
parameters ``mult``, ``shift``, ``zp``, ``relu``. Output: ``result`` (``lanes`` x signed(32)).

Per lane (int32, wrapping; ISA semantics of each instruction)::

    MATMUL: mm + (a if accumulate else 0)
    VADD:   a + b
    VMAX:   max(a, b)
    VRELU:  max(b, 0)
    VQUANT: requant(b, mult, shift, zp, relu), sign-extended to int32
    other opcodes: 0
"""

from amaranth.hdl import Module, Mux, signed, unsigned
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

    Raises
    ------
    ValueError
        If ``lanes`` is out of range.
    """

    LATENCY = 0

    def __new__(cls, *args, **kwargs):
        cls._check(*args, **kwargs)  # before the object exists: a rejected one must not warn "never elaborated"
        return super().__new__(cls)

    @staticmethod
    def _check(lanes):
        if not (isinstance(lanes, int) and 1 <= lanes <= 256):
            raise ValueError(f"VectorUnit lanes must be an integer in 1..256, not {lanes!r}")

    def __init__(self, lanes: int):
        self.lanes = lanes
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
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.requant = rq = Requant(self.lanes, latency=0)
        m.d.comb += [
            rq.data.eq(self.b), rq.mult.eq(self.mult), rq.shift.eq(self.shift),
            rq.zp.eq(self.zp), rq.relu.eq(self.relu), rq.valid.eq(self.op == Opcode.VQUANT),
        ]
        for i in range(self.lanes):
            a, b, out = self.a[i], self.b[i], self.result[i]
            # Every result is assigned to a 32-bit lane: the int32 wrap of the sums.
            with m.Switch(self.op):
                with m.Case(Opcode.MATMUL):
                    m.d.comb += out.eq(self.mm[i] + Mux(self.accumulate, a, 0))
                with m.Case(Opcode.VADD):
                    m.d.comb += out.eq(a + b)
                with m.Case(Opcode.VMAX):
                    m.d.comb += out.eq(Mux(a > b, a, b))
                with m.Case(Opcode.VRELU):
                    m.d.comb += out.eq(Mux(b[31], 0, b))
                with m.Case(Opcode.VQUANT):
                    m.d.comb += out.eq(rq.result[i])
        return m
