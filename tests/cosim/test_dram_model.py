"""DramModel (Amaranth storage) against a Python model: latency, ordering, strobes, read-at-accept."""

import numpy as np
import pytest
from amaranth.sim import Simulator

from npuforge.config import load_config
from npuforge.cosim.dram_model import DramModel


def _requests(rng, n, depth, beat_bytes):
    """Random request stream over a few addresses so reads hit recent writes."""
    addrs = rng.integers(0, 8, n) * 3 + depth - 40
    out = []
    for a in addrs:
        kind = rng.choice(["idle", "read", "write"], p=[0.2, 0.45, 0.35])
        out.append((kind, int(a), int.from_bytes(rng.bytes(beat_bytes), "little"),
                    int(rng.integers(0, 1 << beat_bytes))))
    return out


def _model(reqs, init, latency, beat_bytes):
    """Expected (cycle, data) of every response."""
    mem = dict(init)
    resp = []
    for t, (kind, a, wdata, wstrb) in enumerate(reqs):
        if kind == "read":
            resp.append((t + latency, mem.get(a, 0)))
        elif kind == "write":
            old = mem.get(a, 0)
            for j in range(beat_bytes):
                if wstrb >> j & 1:
                    old = (old & ~(0xFF << 8 * j)) | (wdata & (0xFF << 8 * j))
            mem[a] = old
    return resp


@pytest.mark.parametrize("latency", [1, 2, 5])
def test_dram_model_matches_python_model(latency):
    config = load_config("4x4").replace(dram_mib=1, dram_bytes_per_cycle=16, dram_latency=latency)
    rng = np.random.default_rng(latency)
    depth = config.dram_bytes // 16
    init = {depth - 40 + 3 * i: int(rng.integers(0, 1 << 62)) for i in range(8)}
    init_list = [0] * depth
    for a, v in init.items():
        init_list[a] = v
    dut = DramModel(config, storage="amaranth", init=init_list)
    reqs = _requests(rng, 120, depth, 16)
    expected = _model(reqs, init, latency, 16)
    got = []

    async def tb(ctx):
        for t in range(len(reqs) + latency + 2):
            kind, a, wdata, wstrb = reqs[t] if t < len(reqs) else ("idle", 0, 0, 0)
            ctx.set(dut.bus.req_valid, kind != "idle")
            ctx.set(dut.bus.req_write, kind == "write")
            ctx.set(dut.bus.req_addr, a)
            ctx.set(dut.bus.req_wdata, wdata)
            ctx.set(dut.bus.req_wstrb, wstrb)
            assert ctx.get(dut.bus.req_ready) == 1
            if ctx.get(dut.bus.resp_valid):
                got.append((t, ctx.get(dut.bus.resp_rdata)))
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
    assert got == expected


def test_dram_model_rejects_bad_storage():
    with pytest.raises(ValueError, match="storage"):
        DramModel(load_config("4x4"), storage="sram")
