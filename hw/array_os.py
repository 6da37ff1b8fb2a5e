"""The output-stationary systolic array, with the same ports and row contract as :class:`SystolicArray`.

Each PE ``(i, n)`` computes whole dot products: PE row ``i`` takes every R-th activation
row (the one presented in a cycle ``c`` with ``c mod R == i``), receives its ``R``
elements one per cycle (element ``k`` in cycle ``c + 1 + k``, moving right one column per
cycle), and multiplies each with the weight ``W[k][n]`` that flows down its column. After
``R`` products the sum is finished in the PE and held there until a per-column
multiplexer collects it. The weight tile sits in a register file at the top of the array
and is read out, row after row, in a rotation every ``R`` cycles.

Ports (``OutputStationaryArray(rows, cols)``), as :class:`~npuforge.hw.array.SystolicArray`
-------------------------------------------------------------------------------------------
``act``, ``w_data``, ``w_row``, ``w_valid`` in; ``result`` out.

Timing
------
``LATENCY = rows + cols`` (one more than weight-stationary): ``result(c + LATENCY) =
act(c) @ W_c``, one row per cycle, no stall. A phase counter ``ph`` (0 after reset, +1 mod
``R`` per cycle) picks PE row ``c mod R`` for the activation presented in cycle ``c``.

Weight writes are column-skewed as in the weight-stationary array (row presented in cycle
``t`` lands in column ``n`` at the end of cycle ``t + n``); column ``n`` of the register
file is read for PE row ``i`` in cycle ``c + 1 + k + n - i``. So the activation row
presented in cycle ``c`` sees, for weight row ``k``, the last write of ``k`` presented in
a cycle ``t <= c + k - (c mod R)``. What the compute engine needs holds as for the
weight-stationary array: a tile written row ``k`` in cycle ``P + 1 + k`` (k = 0..R-1) is
not seen by any row presented in a cycle ``c <= P`` and is seen by every row presented in
a cycle ``c >= P + R + 1``.
"""

from amaranth.hdl import Array, Module, Signal, signed
from amaranth.lib import wiring

from .array import SystolicArray, _delay, array_signature, skewed_weight_write
from .pe import OutputStationaryPE

__all__ = ["OutputStationaryArray"]


class OutputStationaryArray(wiring.Component):
    """An output-stationary systolic array (see the module docstring for ports and timing).

    Parameters
    ----------
    rows : int
        PE rows and the K extent of a weight tile, a power of two in 2..64.
    cols : int
        PE columns (the N extent of a weight tile), a power of two in 2..64.

    Raises
    ------
    ValueError
        If ``rows`` or ``cols`` is out of range.
    """

    def __new__(cls, *args, **kwargs):
        SystolicArray._check(*args, **kwargs)  # same limits; checked before a half-built object exists
        return super().__new__(cls)

    def __init__(self, rows: int, cols: int):
        self.rows = rows
        self.cols = cols
        self.LATENCY = rows + cols
        super().__init__(array_signature(rows, cols))

    def elaborate(self, platform):
        m = Module()
        rows, cols = self.rows, self.cols
        pes = [[OutputStationaryPE() for _ in range(cols)] for _ in range(rows)]
        for i in range(rows):
            for n in range(cols):
                m.submodules[f"pe_{i}_{n}"] = pes[i][n]

        ph = Signal(range(rows))
        m.d.sync += ph.eq(ph + 1)       # rows is a power of two: wraps mod R by truncation

        # Activations: PE row i loads the row presented when ph == i and feeds it out element by
        # element, with `first` on element 0 and `last` on element R-1.
        for i in range(rows):
            sr = [Signal(signed(8), name=f"act{i}_{k}", reset_less=True) for k in range(rows)]
            with m.If(ph == i):
                m.d.sync += [sr[k].eq(self.act[k]) for k in range(rows)]
            with m.Else():
                m.d.sync += [sr[k].eq(sr[k + 1]) for k in range(rows - 1)]
            m.d.comb += [
                pes[i][0].a_in.eq(sr[0]),
                pes[i][0].first_in.eq(ph == (i + 1) % rows),
                pes[i][0].last_in.eq(ph == i),
            ]
            for n in range(1, cols):
                m.d.comb += [pes[i][n].a_in.eq(pes[i][n - 1].a_out),
                             pes[i][n].first_in.eq(pes[i][n - 1].first_out),
                             pes[i][n].last_in.eq(pes[i][n - 1].last_out)]

        for n in range(cols):
            # The weight register file, column n, written on the weight-stationary array's diagonal.
            wd, wr, wv = skewed_weight_write(m, self, n)
            wf = [Signal(signed(8), name=f"w{k}_{n}") for k in range(rows)]   # reset: W is zero at start
            for k in range(rows):
                with m.If(wv & (wr == k)):
                    m.d.sync += wf[k].eq(wd)
            # Column n is R-periodic with offset n + 1: the same index reads weights and collects sums.
            sel = Signal(range(rows), name=f"sel{n}")
            m.d.comb += [sel.eq(ph - (n + 1)), pes[0][n].w_in.eq(Array(wf)[sel])]
            for i in range(1, rows):
                m.d.comb += pes[i][n].w_in.eq(pes[i - 1][n].w_out)
            done = Signal(signed(32), name=f"col{n}")
            m.d.comb += done.eq(Array(pes[i][n].hold for i in range(rows))[sel])
            m.d.comb += self.result[n].eq(_delay(m, done, cols - 1 - n, f"deskew{n}"))
        return m
