"""VectorUnit against numpy (ISA semantics of MATMUL's accumulate, VADD, VMAX, VRELU, VQUANT)."""

import numpy as np
import pytest
from amaranth.sim import Simulator

from npuforge.hw.vector import VectorUnit
from npuforge.isa.semantics import requant, wrap32
from npuforge.isa.spec import Opcode

OPS = [Opcode.MATMUL, Opcode.VADD, Opcode.VMAX, Opcode.VRELU, Opcode.VQUANT]


def _model(op, a, b, mm, accumulate, mult, shift, zp, relu):
    a, b, mm = (np.asarray(v, dtype=np.int64) for v in (a, b, mm))
    if op == Opcode.MATMUL:
        return wrap32(mm + (a if accumulate else 0))
    if op == Opcode.VADD:
        return wrap32(a + b)
    if op == Opcode.VMAX:
        return np.maximum(a, b)
    if op == Opcode.VRELU:
        return np.maximum(b, 0)
    return requant(b.astype(np.int32), mult, shift, zp, bool(relu)).astype(np.int32)


@pytest.mark.parametrize("latency", [0, 1])
def test_vector_unit_matches_numpy(latency):
    # latency 1: the result of each case one cycle later, and `alu` with it for every op but VQUANT.
    lanes = 4
    rng = np.random.default_rng(11)
    cases = []
    for j in range(250):
        big = j % 3 == 0          # full-range values: sums wrap, products saturate
        lim = 2**31 if big else 2**12
        a, b, mm = (rng.integers(-lim, lim, lanes) for _ in range(3))
        if j < 10:
            a[:] = 2**31 - 1
            b[:] = 2**31 - 1
            mm[:] = 1
        cases.append((OPS[j % len(OPS)], a, b, mm, int(rng.integers(0, 2)),
                      int(rng.integers(-2**31, 2**31)) if big else int(rng.integers(2**29, 2**31)),
                      int(rng.integers(0, 64)) if big else int(rng.integers(28, 40)),
                      int(rng.integers(-128, 128)), int(rng.integers(0, 2))))
    dut = VectorUnit(lanes, latency=latency)
    mismatches = []

    async def tb(ctx):
        def check(case, ports):
            got = [ctx.get(ports[i]) for i in range(lanes)]
            want = _model(*case).tolist()
            if got != want:
                mismatches.append((case, got, want))

        for j, case in enumerate(cases + [cases[0]] * latency):
            if latency and j:
                await ctx.tick()
                check(cases[j - 1], dut.result)
                if cases[j - 1][0] != Opcode.VQUANT:
                    check(cases[j - 1], dut.alu)
            op, a, b, mm, acc, mult, shift, zp, relu = case
            ctx.set(dut.op, op)
            for i in range(lanes):
                ctx.set(dut.a[i], int(a[i]))
                ctx.set(dut.b[i], int(b[i]))
                ctx.set(dut.mm[i], int(mm[i]))
            for sig, v in ((dut.accumulate, acc), (dut.mult, mult), (dut.shift, shift), (dut.zp, zp),
                           (dut.relu, relu)):
                ctx.set(sig, v)
            if not latency:
                await ctx.delay(1e-6)
                check(case, dut.result)

    sim = Simulator(dut)
    if latency:
        sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
    assert not mismatches, mismatches[:3]
