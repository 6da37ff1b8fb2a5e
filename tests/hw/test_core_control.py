"""NpuCore's control (dispatch, queues, tokens, sequencers, deadlock, counters) with stand-in engines.

The stand-in datapath executes nothing; its engines take a fixed number of cycles and
make one DRAM beat per load / store, which is enough to check that the error code and
index, the instruction count and the DRAM byte counters equal the reference simulator's
on random token programs, deadlocking ones included.
"""

from collections import deque

import numpy as np
import pytest
from amaranth.hdl import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import Out
from amaranth.sim import Simulator

from npuforge.config import load_config
from npuforge.hw.core import NpuCore, datapath_signature
from npuforge.hw.interfaces import ComputeCmd, DmaCmd, dram_port_signature, engine_signature
from npuforge.isa import refsim
from npuforge.isa.encoding import Instruction, encode
from npuforge.isa.spec import BY_OPCODE, LEGAL_DEPS, ErrorCode, Opcode, Queue

CFG = load_config("4x4").replace(queue_depth=2, token_depth=2, imem_words=128)


class _Engine(wiring.Component):
    """Accepts a command, optionally makes one DRAM beat, and is done ``latency`` cycles later."""

    def __init__(self, cmd_layout, latency, pipelined=False, dram=None, config=None):
        self.latency, self.pipelined, self.dram_kind = latency, pipelined, dram
        members = dict(engine_signature(cmd_layout).members)
        if dram:
            members["dram"] = Out(dram_port_signature(config))
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        accept = self.cmd_valid & self.cmd_ready
        if self.pipelined:
            stages = [Signal(name=f"stage{i}") for i in range(self.latency)]
            m.d.sync += stages[0].eq(accept)
            for a, b in zip(stages, stages[1:]):
                m.d.sync += b.eq(a)
            m.d.comb += [self.cmd_ready.eq(1), self.done.eq(stages[-1]),
                         self.busy.eq(sum(stages) != 0)]
            return m
        count = Signal(range(self.latency + 2))
        beat = Signal()           # a DRAM beat is still to be made
        wait = Signal()           # a read response is awaited
        m.d.comb += [self.cmd_ready.eq((count == 0) & ~beat & ~wait), self.busy.eq(~self.cmd_ready)]
        if self.dram_kind:
            d = self.dram
            m.d.comb += [d.req_valid.eq(beat), d.req_write.eq(self.dram_kind == "write")]
            with m.If(accept):
                with m.If((self.cmd.rows != 0) & (self.cmd.len != 0)):
                    m.d.sync += [beat.eq(1), d.req_addr.eq(self.cmd.dram >> 3)]
                with m.Else():
                    m.d.sync += count.eq(self.latency)
            with m.If(beat & d.req_ready):
                m.d.sync += beat.eq(0)
                if self.dram_kind == "read":
                    m.d.sync += wait.eq(1)
                else:
                    m.d.sync += count.eq(self.latency)
            with m.If(wait & d.resp_valid):
                m.d.sync += [wait.eq(0), count.eq(self.latency)]
        else:
            with m.If(accept):
                m.d.sync += count.eq(self.latency)
        with m.If(count != 0):
            m.d.sync += count.eq(count - 1)
        m.d.comb += self.done.eq(count == 1)
        return m


class StandInDatapath(wiring.Component):
    def __init__(self, config, compute_pipelined=True, latencies=(2, 3, 2)):
        self.config = config
        self.compute_pipelined = compute_pipelined
        self.latencies = latencies
        super().__init__(datapath_signature(config))

    def elaborate(self, platform):
        m = Module()
        cfg = self.config
        ll, cl, sl = self.latencies
        m.submodules.le = le = _Engine(DmaCmd, ll, dram="read", config=cfg)
        m.submodules.ce = ce = _Engine(ComputeCmd, cl, pipelined=self.compute_pipelined)
        m.submodules.se = se = _Engine(DmaCmd, sl, dram="write", config=cfg)
        for name, eng in (("load", le), ("compute", ce), ("store", se)):
            port = getattr(self, name)
            m.d.comb += [eng.cmd.eq(port.cmd), eng.cmd_valid.eq(port.cmd_valid), port.cmd_ready.eq(eng.cmd_ready),
                         port.done.eq(eng.done), port.busy.eq(eng.busy)]
        d = self.dram
        grant_load = le.dram.req_valid
        src = [le.dram, se.dram]
        m.d.comb += [
            d.req_valid.eq(le.dram.req_valid | se.dram.req_valid),
            d.req_write.eq(~grant_load),
            d.req_addr.eq(le.dram.req_addr),
            le.dram.req_ready.eq(d.req_ready),
            se.dram.req_ready.eq(d.req_ready & ~grant_load),
            le.dram.resp_valid.eq(d.resp_valid),
        ]
        del src
        return m


def run_core(words, cfg, datapath=StandInDatapath, max_cycles=3000, latency=5):
    """Run a program on the core with a DRAM that answers reads ``latency`` cycles later.

    Returns (error code, error pc, counters as a dict, cycles until done).
    """
    dut = NpuCore(cfg, datapath=datapath)
    out = {}

    async def tb(ctx):
        for i, w in enumerate(words):
            ctx.set(dut.imem_we, 1)
            ctx.set(dut.imem_addr, i)
            ctx.set(dut.imem_data, w)
            await ctx.tick()
        ctx.set(dut.imem_we, 0)
        ctx.set(dut.dram.req_ready, 1)
        ctx.set(dut.start, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)
        pending = deque()
        for cycle in range(max_cycles):
            due = bool(pending) and pending[0] <= cycle
            if due:
                pending.popleft()
            ctx.set(dut.dram.resp_valid, int(due))
            if ctx.get(dut.done):
                counters = ctx.get(dut.counters)
                out["result"] = (ErrorCode(ctx.get(dut.error)), ctx.get(dut.error_pc),
                                 {n: getattr(counters, n) for n in ("cycles", "instructions", "dram_read_bytes",
                                                                    "dram_write_bytes", "dram_read_beats",
                                                                    "dram_write_beats", "load_busy")}, cycle)
                return
            if ctx.get(dut.dram.req_valid) and not ctx.get(dut.dram.req_write):
                pending.append(cycle + latency)
            await ctx.tick()
        raise AssertionError(f"core not done after {max_cycles} cycles")

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
    return out["result"]


def reference(words, cfg):
    try:
        r = refsim.run(words, np.zeros(64, np.uint8), cfg)
    except refsim.SimError as e:
        return e.code, e.pc, None
    return ErrorCode.NONE, 0, r


def token_program(rng, cfg, n, p_wild=0.03):
    """Random loads / computes / stores with random legal token flags, plus fences and scalars.

    A pop is mostly given only when a token was pushed earlier in program order (and a push
    only while fewer than token_depth are outstanding), so that most programs finish; with
    probability ``p_wild`` a flag is set regardless, which may deadlock.
    """
    words = [encode(Instruction(Opcode.SETI, {"rd": 1, "imm": int(rng.integers(0, 8))}))]
    balance = {}
    ops = {Queue.LOAD: [Opcode.LOAD_SP, Opcode.LOAD_ACC32], Queue.COMPUTE: [Opcode.MATMUL, Opcode.VADD, Opcode.PRELOAD],
           Queue.STORE: [Opcode.STORE_ACC32, Opcode.STORE_SP]}
    for _ in range(n):
        r = rng.random()
        if r < 0.05:
            words.append(encode(Instruction(Opcode.FENCE)))
            continue
        if r < 0.1:
            words.append(encode(Instruction(Opcode.NOP)))
            continue
        q = [Queue.LOAD, Queue.COMPUTE, Queue.STORE][rng.integers(3)]
        op = ops[q][rng.integers(len(ops[q]))]
        spec = BY_OPCODE[op]
        args = {}
        for o in spec.operands:
            if o.kind == "mem":
                args[o.name] = (1, int(rng.integers(0, 8)))
            elif o.kind == "dram":
                args[o.name] = (0, int(rng.integers(0, 256)))
            elif o.name == "rows":
                args[o.name] = int(rng.integers(0, 3))
            elif o.name == "len":
                args[o.name] = int(rng.integers(0, 3))
            elif o.name == "stride":
                args[o.name] = 16
        flags = []
        for f, ch in LEGAL_DEPS[q].items():
            if ch is None or rng.random() > 0.5:
                continue
            have = balance.get(ch, 0)
            ok = have > 0 if f.startswith("pop") else have < cfg.token_depth
            if ok or rng.random() < p_wild:
                flags.append(f)
                balance[ch] = have + (-1 if f.startswith("pop") else 1)
        words.append(encode(Instruction(op, args, frozenset(flags))))
    words.append(encode(Instruction(Opcode.HALT)))
    return words


def check_against_reference(words, cfg, datapath=StandInDatapath):
    code, pc, ref = reference(words, cfg)
    got_code, got_pc, counters, cycles = run_core(words, cfg, datapath)
    assert (got_code, got_pc) == (code, pc)
    if ref is not None:
        assert counters["instructions"] == ref.dispatched
        assert counters["dram_read_bytes"] == ref.dram_read_bytes
        assert counters["dram_write_bytes"] == ref.dram_write_bytes
        assert counters["cycles"] == cycles
    return code


def test_empty_program_halts():
    words = [encode(Instruction(Opcode.HALT))]
    code, pc, counters, cycles = run_core(words, CFG)
    assert (code, pc) == (ErrorCode.NONE, 0)
    assert counters["instructions"] == 1 and counters["cycles"] == 1


def test_illegal_opcode_reports_pc():
    words = [encode(Instruction(Opcode.NOP)), encode(Instruction(Opcode.NOP)), 0]
    assert check_against_reference(words, CFG) == ErrorCode.ILLEGAL_INSTR


def test_pop_without_push_deadlocks():
    load = encode(Instruction(Opcode.LOAD_SP, {"sp": (0, 0), "dram": (0, 0), "rows": 1, "len": 4, "stride": 0},
                              frozenset({"pop_next"})))
    words = [encode(Instruction(Opcode.NOP)), load, encode(Instruction(Opcode.HALT))]
    code, pc, _, _ = run_core(words, CFG)
    assert (code, pc) == (ErrorCode.DEADLOCK, 1)
    assert check_against_reference(words, CFG) == ErrorCode.DEADLOCK


def test_push_overflow_deadlocks_at_full_queue():
    """token_depth pushes nobody pops: the unit then waits to push, its queue fills, dispatch waits."""
    load = encode(Instruction(Opcode.LOAD_SP, {"sp": (0, 0), "dram": (0, 0), "rows": 1, "len": 4, "stride": 0},
                              frozenset({"push_next"})))
    words = [load] * 8 + [encode(Instruction(Opcode.HALT))]
    code, pc, _, _ = run_core(words, CFG)
    # depth 2: loads 0 and 1 push; load 2 waits to push; 3 and 4 fill the queue; dispatch waits at 5.
    assert (code, pc) == (ErrorCode.DEADLOCK, 2)
    assert check_against_reference(words, CFG) == ErrorCode.DEADLOCK


@pytest.mark.parametrize("seed", range(12))
def test_random_token_programs(seed):
    rng = np.random.default_rng(seed)
    check_against_reference(token_program(rng, CFG, 30), CFG)


@pytest.mark.parametrize("seed", range(3))
def test_random_token_programs_unpipelined_compute(seed):
    rng = np.random.default_rng(1000 + seed)
    check_against_reference(token_program(rng, CFG, 25), CFG,
                            lambda cfg: StandInDatapath(cfg, compute_pipelined=False))


@pytest.mark.parametrize("seed", range(3))
def test_random_token_programs_long_compute_pipeline(seed):
    """A deep compute pipeline: pushing commands are handed over while earlier ones still run."""
    rng = np.random.default_rng(3000 + seed)
    cfg = CFG.replace(token_depth=3)
    check_against_reference(token_program(rng, cfg, 30), cfg,
                            lambda c: StandInDatapath(c, latencies=(4, 9, 3)))
