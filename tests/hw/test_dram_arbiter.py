"""DramArbiter against a Python model of its round-robin rule, and both DMA engines sharing one DRAM."""

import numpy as np
import pytest
from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.sim import Simulator

from npuforge.assembler.builder import ProgramBuilder
from npuforge.config import HwConfig
from npuforge.hw.core import NpuCore
from npuforge.hw.dma_load import LoadEngine
from npuforge.hw.dma_model import DmaOp, DramSim, dma_timing, load_rows, store_rows
from npuforge.hw.dma_store import StoreEngine
from npuforge.hw.dram_arbiter import DramArbiter
from npuforge.hw.interfaces import DmaCmd
from npuforge.hw.requant import Requant
from npuforge.isa import refsim
from npuforge.isa.spec import ErrorCode, Opcode


def _cfg(beat=8, latency=4):
    return HwConfig(rows=4, cols=4, spad_kib=1, acc_kib=1, dram_bytes_per_cycle=beat, dram_latency=latency)


def test_round_robin_policy_and_routing():
    cfg = _cfg()
    dut = DramArbiter(cfg)
    rng = np.random.default_rng(1)
    cycles = 600
    # Each requester offers a numbered request stream; a request stays valid until accepted.
    load_reqs = [int(a) for a in rng.integers(0, 1 << 20, 250)]
    store_reqs = [(int(a), int(d), int(s)) for a, d, s in zip(rng.integers(0, 1 << 20, 250),
                                                              rng.integers(0, 1 << 62, 250),
                                                              rng.integers(0, 256, 250))]
    want_gap = rng.random(cycles) < 0.3          # requester pauses between requests
    ready = rng.random(cycles) < 0.8
    seen = []            # (cycle, who, addr, data, strb) at the DRAM port
    problems = []

    async def tb(ctx):
        li = si = 0
        lv = sv = False
        prio_store = False
        resp_due = {}
        got_resp = []
        for cyc in range(cycles):
            lv = lv or (li < len(load_reqs) and not want_gap[cyc])
            sv = sv or (si < len(store_reqs) and not want_gap[(cyc * 7) % cycles])
            ctx.set(dut.load.req_valid, lv)
            ctx.set(dut.load.req_write, 0)
            ctx.set(dut.load.req_addr, load_reqs[li] if lv else 0)
            ctx.set(dut.store.req_valid, sv)
            ctx.set(dut.store.req_write, 1)
            if sv:
                a, d, s = store_reqs[si]
                ctx.set(dut.store.req_addr, a)
                ctx.set(dut.store.req_wdata, d)
                ctx.set(dut.store.req_wstrb, s)
            ctx.set(dut.dram.req_ready, bool(ready[cyc]))
            ctx.set(dut.dram.resp_valid, cyc in resp_due)
            ctx.set(dut.dram.resp_rdata, resp_due.pop(cyc, 0))
            if ctx.get(dut.load.resp_valid):
                got_resp.append(ctx.get(dut.load.resp_rdata))
            if ctx.get(dut.store.resp_valid):
                problems.append((cyc, "store got a response"))
            want_store = sv and (not lv or prio_store)
            if ctx.get(dut.grant_store) != want_store and (lv or sv):
                problems.append((cyc, "grant", want_store))
            if ctx.get(dut.dram.req_valid) != (lv or sv):
                problems.append((cyc, "req_valid"))
            if ready[cyc] and (lv or sv):
                if ctx.get(dut.load.req_ready) == want_store or ctx.get(dut.store.req_ready) != want_store:
                    problems.append((cyc, "ready routing"))
                addr = ctx.get(dut.dram.req_addr)
                if want_store:
                    seen.append(("s", addr, ctx.get(dut.dram.req_wdata), ctx.get(dut.dram.req_wstrb),
                                 ctx.get(dut.dram.req_write)))
                    si += 1
                    sv = False
                else:
                    seen.append(("l", addr, ctx.get(dut.dram.req_write)))
                    resp_due[cyc + 3] = addr * 3 + 1
                    li += 1
                    lv = False
                prio_store = not want_store
            await ctx.tick()
        expect_resp = [a * 3 + 1 for (w, a, *_) in seen if w == "l"]
        if got_resp != expect_resp[:len(got_resp)] or len(got_resp) < len(expect_resp) - 3:
            problems.append(("responses", len(got_resp), len(expect_resp)))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
    assert not problems, problems[:5]
    loads = [s[1] for s in seen if s[0] == "l"]
    stores = [s[1:4] for s in seen if s[0] == "s"]
    assert loads == load_reqs[:len(loads)] and len(loads) > 100
    assert stores == store_reqs[:len(stores)] and len(stores) > 100
    assert all(s[2] == 0 for s in seen if s[0] == "l") and all(s[4] == 1 for s in seen if s[0] == "s")
    # Both busy: the port alternates; find a stretch of back-to-back ties and check it.
    assert any(seen[i][0] != seen[i + 1][0] for i in range(len(seen) - 1))


class _Pair(wiring.Component):
    """Load and store engines sharing one DRAM port through the arbiter (the core's arrangement)."""

    def __init__(self, cfg):
        self.load = LoadEngine(cfg)
        self.store = StoreEngine(cfg)
        self.arb = DramArbiter(cfg)
        super().__init__({})

    def elaborate(self, platform):
        m = Module()
        m.submodules.load, m.submodules.store, m.submodules.arb = self.load, self.store, self.arb
        wiring.connect(m, self.load.dram, self.arb.load)
        wiring.connect(m, self.store.dram, self.arb.store)
        return m


def run_pair(cfg, loads, stores, image, acc, max_cycles=5000):
    """Both engines behind the arbiter on one DramSim; returns (dram, spad, load events, store events, grants)."""
    top = _Pair(cfg)
    dram = DramSim(image, cfg.dram_bytes_per_cycle, cfg.dram_latency)
    spad = np.zeros((cfg.spad_rows, cfg.spad_row_bytes), dtype=np.int8)
    events = {"l": [], "s": []}        # per command: [accept, done]
    grants = []

    async def tb(ctx):
        n = {"l": 0, "s": 0}
        dones = {"l": 0, "s": 0}
        acc_row = None
        for cyc in range(max_cycles):
            if acc_row is not None:
                ctx.set(top.store.acc_rd.data, int.from_bytes(acc[acc_row].astype("<i4").tobytes(), "little"))
            dram.drive(ctx, top.arb.dram, cyc)
            sides = (("l", top.load, loads), ("s", top.store, stores))
            for key, eng, cmds in sides:
                ctx.set(eng.cmd_valid, n[key] < len(cmds))
                if n[key] < len(cmds):
                    ctx.set(eng.cmd, DmaCmd.const(cmds[n[key]].fields()))
            dram.sample(ctx, top.arb.dram, cyc)
            for key, eng, cmds in sides:
                if n[key] < len(cmds) and ctx.get(eng.cmd_ready):
                    events[key].append([cyc, None])
                    n[key] += 1
                if ctx.get(eng.done):
                    events[key][dones[key]][1] = cyc
                    dones[key] += 1
            acc_row = ctx.get(top.store.acc_rd.addr) if ctx.get(top.store.acc_rd.en) else None
            if ctx.get(top.load.spad_wr.en):
                spad[ctx.get(top.load.spad_wr.addr)] = np.frombuffer(
                    ctx.get(top.load.spad_wr.data).to_bytes(cfg.spad_row_bytes, "little"), dtype=np.int8)
            if ctx.get(top.arb.dram.req_valid) and ctx.get(top.arb.dram.req_ready):
                grants.append(ctx.get(top.arb.grant_store))
            if dones["l"] == len(loads) and dones["s"] == len(stores):
                break
            await ctx.tick()

    sim = Simulator(top)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
    assert len(events["l"]) == len(loads) and all(d is not None for _, d in events["l"])
    assert len(events["s"]) == len(stores) and all(d is not None for _, d in events["s"])
    as_tuples = {k: [tuple(e) for e in v] for k, v in events.items()}
    return dram, spad, as_tuples["l"], as_tuples["s"], grants


def _check_pair_data(cfg, loads, stores, image, acc, dram, spad):
    want = image.copy()
    for c in stores:
        store_rows(c, acc[c.mem:c.mem + c.rows], want)
    np.testing.assert_array_equal(dram.mem, want)
    expect_spad = np.zeros_like(spad)
    for c in loads:
        expect_spad[c.mem:c.mem + c.rows] = load_rows(c, image, cfg)
    np.testing.assert_array_equal(spad, expect_spad)


def test_engines_share_dram_concurrently():
    """Loads from one DRAM region while stores write another: bit-exact, alternating, cycles as modelled."""
    cfg = _cfg(beat=8, latency=5)
    rng = np.random.default_rng(9)
    image = rng.integers(0, 256, 8192, dtype=np.uint8)
    acc = rng.integers(-2**31, 2**31, (cfg.acc_rows, cfg.cols), dtype=np.int64).astype(np.int32)
    loads = [DmaOp(Opcode.LOAD_SP, 8 * i, 4096 + 100 * i + i, 8, 4, 9) for i in range(6)]
    stores = [DmaOp(Opcode.STORE_ACC32, 6 * i, 37 * i, 6, 4, 17) for i in range(6)]
    dram, spad, lev, sev, grants = run_pair(cfg, loads, stores, image, acc)
    _check_pair_data(cfg, loads, stores, image, acc, dram, spad)
    # While both had work the grants alternated: long runs of one side cannot appear in the middle.
    mid = grants[10:len(grants) // 2]
    assert mid and all(a != b for a, b in zip(mid, mid[1:]))
    assert (lev, sev) == dma_timing(loads, stores, cfg, Requant.LATENCY)


@pytest.mark.parametrize("beat,latency,seed", [(4, 3, 1), (16, 8, 2)])
def test_random_shared_traffic_matches_timing_model(beat, latency, seed):
    cfg = _cfg(beat=beat, latency=latency)
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, 8192, dtype=np.uint8)
    acc = rng.integers(-2**31, 2**31, (cfg.acc_rows, cfg.cols), dtype=np.int64).astype(np.int32)
    loads, stores = [], []
    for i in range(8):
        op = [Opcode.LOAD_SP, Opcode.LOAD_SP, Opcode.LOAD_ACC32][rng.integers(3)]
        rows = int(rng.choice([0, 1, 3, 6]))
        ln = int(rng.integers(0, 5))
        if op == Opcode.LOAD_SP:
            loads.append(DmaOp(op, 6 * i, 4096 + int(rng.integers(0, 3000)), rows, ln, int(rng.integers(0, 40))))
        else:       # accumulator loads count for timing only (the test keeps the scratchpad image)
            loads.append(DmaOp(op, 0, 4096 + int(rng.integers(0, 3000)), rows, ln, int(rng.integers(0, 40))))
        sop = [Opcode.STORE_ACC32, Opcode.STORE_ACC8, Opcode.STORE_SP][rng.integers(3)]
        stores.append(DmaOp(sop, int(rng.integers(0, cfg.acc_rows - 6)), int(rng.integers(0, 3000)),
                            int(rng.choice([0, 1, 2, 6])), int(rng.integers(0, 5)), int(rng.integers(0, 40)),
                            mult=int(rng.integers(1, 1 << 20)), shift=int(rng.integers(0, 30))))
    dram, spad, lev, sev, _ = run_pair(cfg, loads, stores, image, acc)
    assert (lev, sev) == dma_timing(loads, stores, cfg, Requant.LATENCY)
    want = image.copy()
    for c in stores:
        src = np.zeros((c.rows, cfg.spad_row_bytes), np.int8) if c.op == Opcode.STORE_SP else acc[c.mem:c.mem + c.rows]
        store_rows(c, src, want)
    np.testing.assert_array_equal(dram.mem, want)


def _random_dma_program(rng, cfg, rounds=4):
    """Rounds of random loads, a fence, random stores, a fence: the DMA path of a real program."""
    b = ProgramBuilder(cfg)
    b.emit("seti", rd=1, imm=int(rng.integers(1, 1 << 16)))
    for _ in range(rounds):
        for _ in range(int(rng.integers(1, 5))):
            kind = ["load.sp", "load.acc8", "load.acc32"][rng.integers(3)]
            maxlen = cfg.spad_row_bytes if kind == "load.sp" else cfg.cols
            rows, ln = int(rng.integers(0, 6)), int(rng.integers(0, maxlen + 1))
            # Rows 0..11 only, where the stores read: every loaded byte can reach DRAM.
            dest = {"sp": int(rng.integers(0, 12))} if kind == "load.sp" else {"acc": int(rng.integers(0, 12))}
            b.emit(kind, dram=int(rng.integers(0, 3000)), rows=rows, len=ln, stride=int(rng.integers(0, 40)), **dest)
        b.emit("fence")
        for _ in range(int(rng.integers(1, 5))):
            kind = ["store.sp", "store.acc8", "store.acc32"][rng.integers(3)]
            maxlen = cfg.spad_row_bytes if kind == "store.sp" else cfg.cols
            src = {"sp": int(rng.integers(0, 12))} if kind == "store.sp" else {"acc": int(rng.integers(0, 12))}
            extra = {"qreg": 1, "shift": int(rng.integers(0, 20)), "zp": int(rng.integers(-5, 5)),
                     "relu": bool(rng.integers(2))} if kind == "store.acc8" else {}
            b.emit(kind, dram=int(rng.integers(0, 3000)), rows=int(rng.integers(0, 6)),
                   len=int(rng.integers(0, maxlen + 1)), stride=int(rng.integers(0, 40)), **src, **extra)
        b.emit("fence")
    b.emit("halt")
    return b.words()


@pytest.mark.parametrize("beat,latency,seed", [(4, 3, 1), (8, 6, 2), (16, 11, 3)]
                         + [pytest.param(b, lat, s, marks=pytest.mark.slow)
                            for b, lat, s in zip([1, 2, 4, 8, 16, 32, 64] * 3, range(1, 40, 2), range(100, 121))])
def test_core_dma_program_matches_refsim(beat, latency, seed):
    """The engines inside the whole NpuCore (hw/core.py, hw/datapath.py): DRAM bytes equal the reference."""
    cfg = HwConfig(rows=4, cols=4, spad_kib=1, acc_kib=1, dram_mib=1, dram_bytes_per_cycle=beat,
                   dram_latency=latency, imem_words=64)
    rng = np.random.default_rng(seed)
    words = _random_dma_program(rng, cfg)
    image = np.zeros(cfg.dram_bytes, np.uint8)
    image[:4096] = rng.integers(0, 256, 4096)
    ref = refsim.run(words, image, cfg)
    core = NpuCore(cfg)
    dram = DramSim(image, cfg.dram_bytes_per_cycle, cfg.dram_latency)
    result = {}

    async def tb(ctx):
        for i, w in enumerate(words):
            ctx.set(core.imem_we, 1)
            ctx.set(core.imem_addr, i)
            ctx.set(core.imem_data, w)
            await ctx.tick()
        ctx.set(core.imem_we, 0)
        ctx.set(core.start, 1)
        await ctx.tick()
        ctx.set(core.start, 0)
        for cyc in range(20000):
            dram.drive(ctx, core.dram, cyc)
            dram.sample(ctx, core.dram, cyc)
            if ctx.get(core.done):
                result["error"] = ctx.get(core.error)
                break
            await ctx.tick()

    sim = Simulator(core)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
    assert result.get("error") == ErrorCode.NONE, result
    assert (ref.dram != image).any(), "the program should change DRAM"
    diff = np.nonzero(dram.mem != ref.dram)[0]
    assert not len(diff), f"{len(diff)} DRAM bytes differ from the reference, first at {diff[:8]}"
