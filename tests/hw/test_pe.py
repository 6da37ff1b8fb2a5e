"""ProcessingElement against a cycle-by-cycle Python model."""

import numpy as np
import pytest
from amaranth.sim import Simulator

from npuforge.hw.pe import OutputStationaryPE, ProcessingElement


def _wrap32(v):
    return (v + 2**31) % 2**32 - 2**31


def test_pe_matches_model():
    rng = np.random.default_rng(7)
    n = 300
    a = rng.integers(-128, 128, n)
    p = rng.integers(-2**31, 2**31, n)
    p[:20] = 2**31 - 1          # sums that must wrap
    a[:20] = 127
    w_in = rng.integers(-128, 128, n)
    w_load = rng.integers(0, 2, n)
    w_load[:20] = 0
    dut = ProcessingElement()
    errors = []

    async def tb(ctx):
        w = 0                   # reset value
        expect = None           # (a_out, p_out) due after this edge
        for t in range(n):
            ctx.set(dut.a_in, int(a[t]))
            ctx.set(dut.p_in, int(p[t]))
            ctx.set(dut.w_in, int(w_in[t]))
            ctx.set(dut.w_load, int(w_load[t]))
            if t == 0:
                ctx.set(dut.w_load, 1)
                ctx.set(dut.w_in, 100)
            assert ctx.get(dut.w) == w
            if expect is not None and (ctx.get(dut.a_out), ctx.get(dut.p_out)) != expect:
                errors.append((t, expect, ctx.get(dut.a_out), ctx.get(dut.p_out)))
            expect = (int(a[t]), _wrap32(int(p[t]) + int(a[t]) * w))
            if ctx.get(dut.w_load):
                w = ctx.get(dut.w_in)
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
    assert not errors, errors[:5]


@pytest.mark.parametrize("kwargs", [{"input_bits": 4}, {"acc_bits": 16}])
def test_pe_rejects_other_widths(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        ProcessingElement(**kwargs)


def test_output_stationary_pe_matches_model():
    rng = np.random.default_rng(8)
    n = 300
    a = rng.integers(-128, 128, n)
    w = rng.integers(-128, 128, n)
    a[:8] = w[:8] = -128                       # the largest product, several in a row
    first = (rng.random(n) < 0.25).astype(int)
    last = (rng.random(n) < 0.25).astype(int) & (1 - first)
    first[:2] = [1, 0]
    dut = OutputStationaryPE()
    errors = []

    async def tb(ctx):
        acc, hold, prev = 0, 0, None
        for t in range(n):
            for sig, v in ((dut.a_in, a[t]), (dut.w_in, w[t]), (dut.first_in, first[t]), (dut.last_in, last[t])):
                ctx.set(sig, int(v))
            if prev is not None:
                got = tuple(ctx.get(s) for s in (dut.a_out, dut.w_out, dut.first_out, dut.last_out))
                if got != prev or (t > 1 and ctx.get(dut.hold) != hold):
                    errors.append((t, got, prev, ctx.get(dut.hold), hold))
            total = _wrap32((0 if first[t] else acc) + int(a[t]) * int(w[t]))
            acc = total
            if last[t]:
                hold = total
            prev = (int(a[t]), int(w[t]), int(first[t]), int(last[t]))
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
    assert not errors, errors[:5]
