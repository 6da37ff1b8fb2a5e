"""The processing elements: int8 x int8 -> int32 multiply-accumulate cells.

:class:`ProcessingElement` is the cell of the weight-stationary array (:mod:`npuforge.hw.array`),
:class:`OutputStationaryPE` that of the output-stationary array (:mod:`npuforge.hw.array_os`).

Ports (``ProcessingElement(input_bits=8, acc_bits=32)``)
--------------------------------------------------------
``a_in``/``a_out`` signed(input_bits): the activation, passed to the right neighbour;
``p_in``/``p_out`` signed(acc_bits): the partial sum, passed to the neighbour below;
``w_in`` signed(input_bits) and ``w_load``: load the stationary weight; ``w`` (out): the weight held.

Timing (every cycle, no stall)::

    a_out(t+1) = a_in(t)
    p_out(t+1) = (p_in(t) + a_in(t) * w(t)) mod 2**acc_bits   (two's complement wrap)
    w(t+1)     = w_in(t) if w_load(t) else w(t)              (reset value 0)

A weight loaded in cycle ``t`` is first used by the activation present in cycle ``t+1``.
"""

from amaranth.hdl import Module, Mux, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = ["ProcessingElement", "OutputStationaryPE"]


class ProcessingElement(wiring.Component):
    """One multiply-accumulate cell (see the module docstring for ports and timing).

    Parameters
    ----------
    input_bits : int
        Activation and weight width: 8 (the ISA's int8).
    acc_bits : int
        Partial-sum width: 32 (the ISA's int32).

    Raises
    ------
    ValueError
        If a width is not the one the ISA defines.
    """

    def __new__(cls, *args, **kwargs):
        cls._check(*args, **kwargs)  # before the object exists: a rejected one must not warn "never elaborated"
        return super().__new__(cls)

    @staticmethod
    def _check(input_bits=8, acc_bits=32):
        if input_bits != 8:
            raise ValueError(f"ProcessingElement input_bits must be 8 (int8), not {input_bits!r}")
        if acc_bits != 32:
            raise ValueError(f"ProcessingElement acc_bits must be 32 (int32), not {acc_bits!r}")

    def __init__(self, input_bits: int = 8, acc_bits: int = 32):
        self.input_bits = input_bits
        self.acc_bits = acc_bits
        super().__init__({
            "a_in": In(signed(input_bits)),
            "p_in": In(signed(acc_bits)),
            "w_in": In(signed(input_bits)),
            "w_load": In(1),
            "a_out": Out(signed(input_bits)),
            "p_out": Out(signed(acc_bits)),
            "w": Out(signed(input_bits)),
        })

    def elaborate(self, platform):
        m = Module()
        # The data registers need no reset (the weight does: W is zero at start): a result is
        # built only from values that entered after its row did. Without the reset mux they are
        # also cheaper to simulate.
        a = Signal.like(self.a_out, reset_less=True, name="a")
        p = Signal.like(self.p_out, reset_less=True, name="p")
        m.d.sync += [
            a.eq(self.a_in),
            # Assigning the (acc_bits+1)-bit sum to an acc_bits register is the int32 wrap.
            p.eq(self.p_in + self.a_in * self.w),
        ]
        m.d.comb += [self.a_out.eq(a), self.p_out.eq(p)]
        with m.If(self.w_load):
            m.d.sync += self.w.eq(self.w_in)
        return m


class OutputStationaryPE(wiring.Component):
    """One cell of the output-stationary array: it keeps a running sum and passes both operands on.

    Ports: ``a_in``/``a_out`` (activation, to the right, with the ``first``/``last`` flags of
    its row), ``w_in``/``w_out`` (weight, downwards), ``hold`` (the last finished sum).

    Timing (every cycle, no stall)::

        a_out, first_out, last_out, w_out (t+1) = a_in, first_in, last_in, w_in (t)
        sum(t)     = (0 if first_in(t) else acc(t)) + a_in(t) * w_in(t)      (int32, wrapping)
        acc(t+1)   = sum(t)
        hold(t+1)  = sum(t) if last_in(t) else hold(t)
    """

    def __init__(self):
        super().__init__({
            "a_in": In(signed(8)), "first_in": In(1), "last_in": In(1), "w_in": In(signed(8)),
            "a_out": Out(signed(8)), "first_out": Out(1), "last_out": Out(1), "w_out": Out(signed(8)),
            "hold": Out(signed(32)),
        })

    def elaborate(self, platform):
        m = Module()
        # Data registers without reset (see ProcessingElement); a sum always starts at `first`.
        regs = {name: Signal.like(getattr(self, name), reset_less=True, name=name[:-4] + "_r")
                for name in ("a_out", "w_out", "hold")}
        acc = Signal(signed(32), reset_less=True)
        total = Signal(signed(32))
        m.d.comb += total.eq((Mux(self.first_in, 0, acc) + self.a_in * self.w_in)[:32].as_signed())
        m.d.sync += [
            regs["a_out"].eq(self.a_in), regs["w_out"].eq(self.w_in), acc.eq(total),
            self.first_out.eq(self.first_in), self.last_out.eq(self.last_in),
        ]
        with m.If(self.last_in):
            m.d.sync += regs["hold"].eq(total)
        m.d.comb += [getattr(self, name).eq(reg) for name, reg in regs.items()]
        return m
