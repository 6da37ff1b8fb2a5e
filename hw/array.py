"""The weight-stationary systolic array: ``rows`` x ``cols`` processing elements with skew and de-skew.

PE ``(k, n)`` holds weight ``W[k][n]``. Activations enter on the left (element ``k``
of an activation row feeds array row ``k``) and move right one column per cycle;
partial sums move down one row per cycle; column ``n``'s sums leave at the bottom.
The array skews its inputs and de-skews its outputs itself, so callers see whole rows.

Ports (``SystolicArray(rows, cols)``)
-------------------------------------
- ``act`` (``rows`` x signed(8)): one activation row per cycle (zero when idle).
- ``w_data`` (``cols`` x signed(8)), ``w_row`` (0..rows-1), ``w_valid``: write weight row ``w_row``.
- ``result`` (``cols`` x signed(32)): ``act @ W`` of the row presented ``LATENCY`` cycles earlier.

Timing
------
``LATENCY = rows + cols - 1``: ``result(c + LATENCY) = act(c) @ W_c`` (int32, wrapping),
one row per cycle, no stall. Activation element ``k`` passes PE ``(k, n)`` in cycle ``c + k + n``.

Weight writes travel on the same diagonal wavefront: a row presented in cycle ``t``
(``w_valid`` high) is written into PE ``(k, n)`` at the end of cycle ``t + n``. So the
tile ``W_c`` seen by the activation row presented in cycle ``c`` holds, for each row
``k``, the last write of row ``k`` presented in a cycle ``t <= c + k - 1``. In
particular every write presented before ``c`` is seen and every write presented at
``c`` or later is not seen by row 0. This is what lets a new weight tile stream in
(one row per cycle) right behind the last activation row of the previous tile and
right ahead of the first activation row that uses it, with no bubble and no second
weight buffer.
"""

from amaranth.hdl import Module, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from .pe import ProcessingElement

__all__ = ["SystolicArray", "array_signature", "skewed_weight_write"]


def _delay(m, value, cycles, name, reset_less=True):
    """``value`` delayed by ``cycles`` registers (``cycles`` may be 0)."""
    for j in range(cycles):
        reg = Signal.like(value, name=f"{name}_d{j + 1}", reset_less=reset_less)
        m.d.sync += reg.eq(value)
        value = reg
    return value


def array_signature(rows: int, cols: int) -> dict:
    """The ports both dataflows share (see the module docstring)."""
    return {
        "act": In(data.ArrayLayout(signed(8), rows)),
        "w_data": In(data.ArrayLayout(signed(8), cols)),
        "w_row": In(range(rows)),
        "w_valid": In(1),
        "result": Out(data.ArrayLayout(signed(32), cols)),
    }


def skewed_weight_write(m, array, n):
    """The weight write (data, row index, valid) as column ``n`` sees it: ``n`` cycles late, the
    diagonal the activations travel, so a write never overtakes or lags the rows around it."""
    wd = Signal(signed(8), name=f"wdata{n}")
    wr = Signal.like(array.w_row, name=f"wrow{n}")
    wv = Signal(name=f"wvalid{n}")
    m.d.comb += [wd.eq(array.w_data[n]), wr.eq(array.w_row), wv.eq(array.w_valid)]
    # Only the valid bit needs a reset: it alone can start a write.
    return tuple(_delay(m, s, n, f"wcol{n}_{tag}", reset_less=tag != "valid")
                 for s, tag in ((wd, "data"), (wr, "row"), (wv, "valid")))


class SystolicArray(wiring.Component):
    """A weight-stationary systolic array (see the module docstring for ports and timing).

    Parameters
    ----------
    rows : int
        PE rows (the K extent of a weight tile), a power of two in 2..64.
    cols : int
        PE columns (the N extent of a weight tile), a power of two in 2..64.

    Raises
    ------
    ValueError
        If ``rows`` or ``cols`` is out of range.
    """

    def __new__(cls, *args, **kwargs):
        cls._check(*args, **kwargs)  # before the object exists: a rejected one must not warn "never elaborated"
        return super().__new__(cls)

    @staticmethod
    def _check(rows, cols):
        for what, v in (("rows", rows), ("cols", cols)):
            if not (isinstance(v, int) and 2 <= v <= 64 and v & (v - 1) == 0):
                raise ValueError(f"SystolicArray {what} must be a power of two in 2..64, not {v!r}")

    def __init__(self, rows: int, cols: int):
        self.rows = rows
        self.cols = cols
        self.LATENCY = rows + cols - 1
        super().__init__(array_signature(rows, cols))

    def elaborate(self, platform):
        m = Module()
        rows, cols = self.rows, self.cols
        pes = [[ProcessingElement() for _ in range(cols)] for _ in range(rows)]
        for k in range(rows):
            for n in range(cols):
                m.submodules[f"pe_{k}_{n}"] = pes[k][n]

        # Input skew: array row k sees its activation k cycles late.
        for k in range(rows):
            a = Signal(signed(8), name=f"act{k}")
            m.d.comb += a.eq(self.act[k])
            m.d.comb += pes[k][0].a_in.eq(_delay(m, a, k, f"skew{k}"))

        # Weight writes: column n sees the row (data, index, valid) n cycles late, the same
        # diagonal as the activations, so a write never overtakes or lags the rows around it.
        for n in range(cols):
            wd, wr, wv = skewed_weight_write(m, self, n)
            for k in range(rows):
                m.d.comb += [pes[k][n].w_in.eq(wd), pes[k][n].w_load.eq(wv & (wr == k))]

        for k in range(rows):
            for n in range(cols):
                if n > 0:
                    m.d.comb += pes[k][n].a_in.eq(pes[k][n - 1].a_out)
                if k > 0:
                    m.d.comb += pes[k][n].p_in.eq(pes[k - 1][n].p_out)

        # Output de-skew: column n finishes n cycles after column 0; delay the early ones.
        for n in range(cols):
            m.d.comb += self.result[n].eq(_delay(m, pes[rows - 1][n].p_out, cols - 1 - n, f"deskew{n}"))
        return m
