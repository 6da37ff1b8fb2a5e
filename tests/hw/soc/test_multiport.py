"""FPGA multi-port memories (1W1R copies + live-value table) against a model, alone and inside the
core's Scratchpad and Accumulator elaborated for an FPGA platform."""

import numpy as np
import pytest
from amaranth.lib.memory import Memory
from amaranth.sim import Simulator

from npuforge.config import HwConfig
from npuforge.hw.memories import Accumulator, Scratchpad
from npuforge.hw.soc.multiport import FpgaStandIn, OnFpga, ReplicatedMemory, memory_factory


def _traffic(top, wports, rports, rows, bits, cycles, seed, pool=None, latencies=None):
    """Random writes and reads on every port each cycle; reads must return the row as of before the
    cycle's writes ``latencies[i]`` cycles later (default 1), and hold until the next read's row arrives.
    Two writes to one row in a cycle are avoided (undefined)."""
    rng = np.random.default_rng(seed)
    model = [0] * rows
    latencies = latencies or [1] * len(rports)
    bad, checked = [], [0]

    async def tb(ctx):
        expect, arriving = {}, {}       # arriving: cycle -> {port: row}
        for cyc in range(cycles):
            expect.update(arriving.pop(cyc, {}))
            for i, want in expect.items():
                checked[0] += 1
                got = ctx.get(rports[i].data)
                if got != want:
                    bad.append((cyc, i, want, got))
            addrs = pool if pool is not None else range(rows)
            writes = {}
            for p in wports:
                en, addr = bool(rng.integers(2)), int(rng.choice(addrs))
                en = en and addr not in writes
                val = int.from_bytes(rng.bytes(bits // 8), "little")
                ctx.set(p.en, en), ctx.set(p.addr, addr), ctx.set(p.data, val)
                if en:
                    writes[addr] = val
            for i, p in enumerate(rports):
                en, addr = bool(rng.integers(4)), int(rng.choice(addrs))
                ctx.set(p.en, en), ctx.set(p.addr, addr)
                if en:
                    arriving.setdefault(cyc + latencies[i], {})[i] = model[addr]
            for a, v in writes.items():
                model[a] = v
            await ctx.tick()

    sim = Simulator(top)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
    assert checked[0] > cycles // 2
    assert not bad, bad[:5]


@pytest.mark.parametrize("nw,nr", [(1, 1), (1, 2), (2, 3), (3, 2)])
def test_replicated_memory_matches_model(nw, nr):
    mem = ReplicatedMemory(shape=16, depth=32)
    w = [mem.write_port() for _ in range(nw)]
    r = [mem.read_port(domain="sync") for _ in range(nr)]
    _traffic(mem, w, r, 32, 16, 300, seed=nw * 10 + nr)
    # Hot rows: same-cycle read/write collisions and the live-value table switching banks.
    mem = ReplicatedMemory(shape=16, depth=32)
    w = [mem.write_port() for _ in range(nw)]
    r = [mem.read_port(domain="sync") for _ in range(nr)]
    _traffic(mem, w, r, 32, 16, 300, seed=nw * 10 + nr + 1, pool=[3, 4])


@pytest.mark.parametrize("nw", [1, 2])
def test_two_cycle_read_ports_match_model(nw):
    # latency=2 ports beside latency-1 ports of the same memory: the registered copies and table answer.
    for seed, pool in ((40 + nw, None), (50 + nw, [3, 4])):
        mem = ReplicatedMemory(shape=16, depth=32)
        w = [mem.write_port() for _ in range(nw)]
        r = [mem.read_port(domain="sync", latency=lat) for lat in (2, 1, 2)]
        _traffic(mem, w, r, 32, 16, 300, seed=seed, pool=pool, latencies=[2, 1, 2])


def _cfg(**kw):
    return HwConfig(**dict(dict(rows=4, cols=4, spad_kib=1, acc_kib=1, spad_banks=2), **kw))


def test_scratchpad_on_fpga_platform_matches_model():
    cfg = _cfg()
    sp = Scratchpad(cfg)
    _traffic(OnFpga(sp), [sp.wr], [sp.rd_compute, sp.rd_store], cfg.spad_rows, sp.data_bits, 300, seed=5)


@pytest.mark.parametrize("latency", [1, 2])
@pytest.mark.parametrize("on_fpga", [False, True])
def test_accumulator_matches_model(on_fpga, latency):
    cfg = _cfg()
    acc = Accumulator(cfg, compute_read_latency=latency)
    _traffic(OnFpga(acc) if on_fpga else acc, [acc.wr_load, acc.wr_compute], [acc.rd_a, acc.rd_b, acc.rd_store],
             cfg.acc_rows, acc.data_bits, 300, seed=6 + latency, pool=[0, 1, 2], latencies=[latency, latency, 1])


def test_memory_factory_choice():
    assert memory_factory(None) is Memory
    assert memory_factory(FpgaStandIn()) is ReplicatedMemory
    bad = type("P", (), {"npuforge_memory": "sram"})()
    with pytest.raises(ValueError, match="npuforge_memory must be 'native' or 'fpga', not 'sram'"):
        memory_factory(bad)


def test_replicated_memory_rejects_what_it_does_not_model():
    with pytest.raises(ValueError, match="init must be empty"):
        ReplicatedMemory(shape=8, depth=4, init=[1])
    mem = ReplicatedMemory(shape=8, depth=4)
    mem._MustUse__silence = True        # built only to have its port methods refuse
    with pytest.raises(ValueError, match="not transparent"):
        mem.read_port(transparent_for=(mem.write_port(),))
    with pytest.raises(ValueError, match="granularity"):
        mem.write_port(granularity=4)
    with pytest.raises(ValueError, match="read latency must be 1 or 2 cycles, not 3"):
        mem.read_port(latency=3)
    with pytest.raises(ValueError, match="compute_read_latency must be 1 or 2, not 0"):
        Accumulator(_cfg(), compute_read_latency=0)
