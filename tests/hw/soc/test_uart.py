"""UART receiver and transmitter in amaranth.sim: a loop-back of random bytes, a framing error,
and the divisor check."""

import numpy as np
import pytest
from amaranth.hdl import Module
from amaranth.sim import Simulator

from npuforge.hw.soc.uart import UartRx, UartTx, check_divisor


def _loopback(divisor, data):
    m = Module()
    m.submodules.tx = tx = UartTx(divisor)
    m.submodules.rx = rx = UartRx(divisor)
    m.d.comb += rx.rx.eq(tx.tx)
    got = []

    async def feed(ctx):
        for byte in data:
            ctx.set(tx.data, byte)
            ctx.set(tx.valid, 1)
            await ctx.tick().until(tx.ready)
            await ctx.tick()
            ctx.set(tx.valid, 0)

    async def collect(ctx):
        while len(got) < len(data):
            await ctx.tick()
            if ctx.get(rx.valid):
                got.append(ctx.get(rx.data))
            assert not ctx.get(rx.error)

    sim = Simulator(m)
    sim.add_clock(1e-6)
    sim.add_testbench(feed)
    sim.add_testbench(collect)
    sim.run_until(1e-6 * divisor * 11 * (len(data) + 2))
    return got


@pytest.mark.parametrize("divisor", [4, 7, 16])
def test_loopback_random_bytes(divisor):
    data = [int(b) for b in np.random.default_rng(divisor).integers(0, 256, 24)]
    assert _loopback(divisor, data) == data


def test_low_stop_bit_is_a_framing_error():
    d = 8
    rx = UartRx(d)
    seen = {"valid": 0, "error": 0}

    async def drive(ctx):
        ctx.set(rx.rx, 1)
        await ctx.tick().repeat(3)
        for bit in [0] + [1, 0, 1, 0, 1, 0, 1, 0] + [0] * 3 + [1] * 3:   # stop bit low (a break)
            ctx.set(rx.rx, bit)
            for _ in range(d):
                await ctx.tick()
                seen["valid"] += ctx.get(rx.valid)
                seen["error"] += ctx.get(rx.error)

    sim = Simulator(rx)
    sim.add_clock(1e-6)
    sim.add_testbench(drive)
    sim.run()
    assert seen == {"valid": 0, "error": 1}


def test_check_divisor():
    assert check_divisor(12_000_000, 115200) == 104
    assert check_divisor(16_000_000, 2_000_000) == 8
    with pytest.raises(ValueError, match="at least 4 clock cycles per bit"):
        check_divisor(12_000_000, 6_000_000)
    with pytest.raises(ValueError, match="more than 2 % off"):
        check_divisor(12_000_000, 1_000_000 + 450_000)
    with pytest.raises(ValueError, match="divisor must be an integer in 4"):
        UartTx(2)
