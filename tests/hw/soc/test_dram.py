"""The on-chip DRAM against the simulation's DRAM model, cycle by cycle: the same random requests
drive both, and their responses must agree in every cycle (the board run takes the RTL cosim's cycles)."""

import numpy as np
import pytest
from amaranth.hdl import Module
from amaranth.sim import Simulator

from npuforge.config import HwConfig
from npuforge.cosim.dram_model import DramModel
from npuforge.hw.soc.dram import OnChipDram, latency_ring_depth

BEATS = 16


def _simulate(dut, testbench):
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(testbench)
    sim.run()


def _config(latency):
    return HwConfig(rows=2, cols=2, spad_kib=1, acc_kib=1, dram_mib=1, dram_bytes_per_cycle=4, dram_latency=latency)


@pytest.mark.parametrize("latency", [1, 2, 3, 5, 6, 9])
def test_on_chip_dram_answers_like_the_dram_model(latency):
    cfg = _config(latency)
    m = Module()
    m.submodules.chip = chip = OnChipDram(cfg, BEATS * 4)
    m.submodules.model = model = DramModel(cfg, storage="amaranth", init=[0] * BEATS)
    rng = np.random.default_rng(latency)
    cycles, seen, bad = 300, [0], []

    async def tb(ctx):
        for cyc in range(cycles):
            valid = bool(rng.integers(4))          # mostly back-to-back requests
            write = bool(rng.integers(2))
            req = {"req_valid": valid, "req_write": write, "req_addr": int(rng.integers(BEATS)),
                   "req_wdata": int(rng.integers(1 << 32)), "req_wstrb": int(rng.integers(16))}
            for name, value in req.items():
                ctx.set(getattr(chip.bus, name), value)
                ctx.set(getattr(model.bus, name), value)
            got = (ctx.get(chip.bus.resp_valid), ctx.get(chip.bus.resp_rdata))
            want = (ctx.get(model.bus.resp_valid), ctx.get(model.bus.resp_rdata))
            if want[0]:
                seen[0] += 1
            if got[0] != want[0] or (want[0] and got[1] != want[1]):
                bad.append((cyc, got, want))
            await ctx.tick()

    _simulate(m, tb)
    assert seen[0] > cycles // 5
    assert not bad, bad[:5]


def test_host_port_reads_what_the_core_wrote_once_it_stops():
    cfg = _config(2)
    chip = OnChipDram(cfg, BEATS * 4)
    got = []

    async def tb(ctx):
        ctx.set(chip.bus.req_valid, 1), ctx.set(chip.bus.req_write, 1)
        ctx.set(chip.bus.req_addr, 5), ctx.set(chip.bus.req_wdata, 0xA1B2C3D4), ctx.set(chip.bus.req_wstrb, 0b1011)
        await ctx.tick()
        ctx.set(chip.bus.req_valid, 0)
        await ctx.tick()                       # the registered write lands
        ctx.set(chip.host_addr, 5), ctx.set(chip.host_re, 1)
        await ctx.tick()
        ctx.set(chip.host_re, 0)
        got.append(ctx.get(chip.host_rdata))

    _simulate(chip, tb)
    assert got == [0xA100C3D4]


def test_overrun_is_sticky_until_cleared():
    chip = OnChipDram(_config(2), BEATS * 4)
    seen = []

    async def tb(ctx):
        ctx.set(chip.bus.req_valid, 1), ctx.set(chip.bus.req_addr, BEATS)
        await ctx.tick()
        ctx.set(chip.bus.req_valid, 0)
        await ctx.tick()
        seen.append(ctx.get(chip.overrun))
        ctx.set(chip.clear_overrun, 1)
        await ctx.tick()
        seen.append(ctx.get(chip.overrun))

    _simulate(chip, tb)
    assert seen == [1, 0]


def test_latency_ring_only_past_three_registers():
    assert [latency_ring_depth(lat) for lat in (1, 2, 4, 5, 6, 9, 32)] == [0, 0, 0, 0, 8, 16, 32]
