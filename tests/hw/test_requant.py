"""Requant against isa.semantics.requant: edge values, random values, every latency."""

import itertools

import numpy as np
import pytest
from amaranth.sim import Simulator

from npuforge.hw.requant import Requant
from npuforge.isa.semantics import requant

INT32_MIN, INT32_MAX = -2**31, 2**31 - 1
EDGE_X = [INT32_MIN, -1, 0, 1, INT32_MAX]


def _edge_cases():
    """Every combination of edge parameters, all edge x values in one row."""
    for mult, shift, zp, relu in itertools.product(
            [INT32_MIN, -1, 0, 1, INT32_MAX, 1 << 30], [0, 1, 31, 62, 63], [-128, 0, 127], [0, 1]):
        yield EDGE_X, mult, shift, zp, relu


def _every_shift_cases():
    """Extreme products at every shift, where the rounding add and the wide paths matter most."""
    for mult, shift, zp, relu in itertools.product([INT32_MIN, INT32_MAX], range(64), [-128, 127], [0, 1]):
        yield [INT32_MIN, INT32_MIN + 1, INT32_MAX], mult, shift, zp, relu


def _saturation_cases():
    """Small values through shifts 0..2: rounding of ties both signs, ReLU and clamping around every zp."""
    xs = list(range(-700, 700, 13))
    for shift, zp, relu in itertools.product(range(3), [-128, 0, 127], [0, 1]):
        for i in range(0, len(xs), 8):
            yield xs[i:i + 8] + [0] * (8 - len(xs[i:i + 8])), 1, shift, zp, relu


def _random_cases(rng, n, lanes):
    for j in range(n):
        if j % 2:
            # Realistic scales: outputs spread over the int8 range rather than saturating.
            x = rng.integers(-2**20, 2**20, lanes)
            mult = int(rng.integers(2**29, 2**31))
            shift = int(rng.integers(30, 45))
        else:
            x = rng.integers(INT32_MIN, INT32_MAX, lanes, endpoint=True)
            mult = int(rng.integers(INT32_MIN, INT32_MAX, endpoint=True))
            shift = int(rng.integers(0, 64))
        yield [int(v) for v in x], mult, shift, int(rng.integers(-128, 128)), int(rng.integers(0, 2))


def _run(cases, lanes, latency):
    """Drive one case per cycle with `valid` high, return the (valid, result) seen LATENCY cycles later."""
    dut = Requant(lanes, latency=latency)
    cases = list(cases)
    seen = []

    async def tb(ctx):
        for t in range(len(cases) + latency):
            if t < len(cases):
                x, mult, shift, zp, relu = cases[t]
                for i, v in enumerate(x):
                    ctx.set(dut.data[i], v)
                ctx.set(dut.mult, mult)
                ctx.set(dut.shift, shift)
                ctx.set(dut.zp, zp)
                ctx.set(dut.relu, relu)
                ctx.set(dut.valid, 1)
            else:
                ctx.set(dut.valid, 0)
            if t >= latency:
                seen.append((ctx.get(dut.result_valid), [ctx.get(dut.result[i]) for i in range(lanes)]))
            # A combinational requantiser has no clock domain: just let time pass.
            await (ctx.tick() if latency else ctx.delay(1e-6))

    sim = Simulator(dut)
    if latency:
        sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
    return cases, seen


def _check(cases, seen):
    assert len(seen) == len(cases)
    for (x, mult, shift, zp, relu), (valid, got) in zip(cases, seen):
        want = requant(np.array(x, dtype=np.int32), mult, shift, zp, bool(relu)).tolist()
        assert valid == 1
        assert got == want, f"x={x} mult={mult} shift={shift} zp={zp} relu={relu}"


@pytest.mark.parametrize("latency", [0, 1, 2])
def test_edge_values(latency):
    _check(*_run(_edge_cases(), len(EDGE_X), latency))


def test_every_shift_extremes():
    _check(*_run(_every_shift_cases(), 3, 1))


def test_small_values_saturation_and_ties():
    _check(*_run(_saturation_cases(), 8, 0))


@pytest.mark.parametrize("latency", [0, 2])
def test_random_values(latency):
    rng = np.random.default_rng(1234 + latency)
    _check(*_run(_random_cases(rng, 200, 4), 4, latency))


def test_wrapping_round_corner():
    # The one input where the int64 rounding add of the reference wraps: the RTL must wrap the same way.
    want = requant(np.array([INT32_MIN], dtype=np.int32), INT32_MIN, 63, 5, False)
    assert want.tolist() == [4]
    _check(*_run([([INT32_MIN], INT32_MIN, 63, 5, 0)], 1, 2))


def test_valid_follows_latency():
    dut = Requant(2)
    assert Requant.LATENCY == dut.LATENCY == 2
    got = []

    async def tb(ctx):
        pattern = [1, 0, 0, 1, 1, 0, 0, 0]
        for v in pattern:
            ctx.set(dut.valid, v)
            got.append(ctx.get(dut.result_valid))
            await ctx.tick()
        assert got == [0, 0] + pattern[:-2]

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()


@pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")
@pytest.mark.parametrize("kwargs, field", [({"lanes": 0}, "lanes"), ({"lanes": 4, "latency": 3}, "latency")])
def test_bad_parameters(kwargs, field):
    with pytest.raises(ValueError, match=field):
        Requant(**kwargs)
