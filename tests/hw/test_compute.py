"""ComputeEngine in amaranth.sim with Python memory models, against a numpy model of the ISA semantics.

The memory models read synchronously (data in the cycle after ``en``; random garbage
otherwise) and are run both write-before-read and read-before-write in the same cycle,
so the results may not depend on the accumulator's read-during-write behaviour.
"""

import numpy as np
import pytest
from amaranth.hdl import Fragment
from amaranth.sim import Simulator

from npuforge.config import HwConfig, load_config
from npuforge.hw.compute import ComputeEngine, compute_timing, vquant_bubbles
from npuforge.hw.interfaces import ComputeCmd
from npuforge.isa.semantics import requant, wrap32
from npuforge.isa.spec import Opcode

VECTOR = (Opcode.VADD, Opcode.VMAX, Opcode.VRELU, Opcode.VQUANT)


def _cmd(op, src=0, dst=0, rows=0, accumulate=0, mult=0, shift=0, zp=0, relu=0):
    return dict(op=op, src=src, dst=dst, rows=rows, accumulate=accumulate, mult=mult, shift=shift, zp=zp, relu=relu)


def isa_model(config, cmds, spad, acc):
    """Execute compute commands one after the other, row by row, as isa/spec.py's semantics say."""
    R, C = config.rows, config.cols
    spad = spad.astype(np.int64)
    acc = acc.astype(np.int64).copy()
    w = np.zeros((R, C), dtype=np.int64)
    for c in cmds:
        op, s, d = c["op"], c["src"], c["dst"]
        if op == Opcode.PRELOAD:
            w = spad[s:s + R, :C].copy()
            continue
        for i in range(c["rows"]):
            if op == Opcode.MATMUL:
                acc[d + i] = wrap32((acc[d + i] if c["accumulate"] else 0) + spad[s + i, :R] @ w)
            elif op == Opcode.VADD:
                acc[d + i] = wrap32(acc[d + i] + acc[s + i])
            elif op == Opcode.VMAX:
                acc[d + i] = np.maximum(acc[d + i], acc[s + i])
            elif op == Opcode.VRELU:
                acc[d + i] = np.maximum(acc[s + i], 0)
            elif op == Opcode.VQUANT:
                acc[d + i] = requant(acc[s + i].astype(np.int32), c["mult"], c["shift"], c["zp"], bool(c["relu"]))
    return acc.astype(np.int32)


def _pack(row, dtype):
    return int.from_bytes(np.asarray(row, dtype=dtype).tobytes(), "little")


def run_engine(config, cmds, spad, acc, *, transparent=False, gaps=None, seed=0, read_latency=1):
    """Simulate the engine on the commands; ``gaps[j]`` idle cycles before offering command j.

    ``read_latency`` 2: the accumulator model answers a read two cycles after its ``en`` (as the FPGA
    datapath's accumulator does), for an engine built with ``acc_read_latency=2``.
    Returns the final accumulator and a trace: offer, accept and done cycles, busy per cycle.
    """
    dut = ComputeEngine(config, acc_read_latency=read_latency)
    acc = acc.copy()
    rng = np.random.default_rng(seed)
    gaps = gaps or [0] * len(cmds)
    trace = {"offer": [], "accept": [], "done": [], "busy": []}
    row_bits = 8 * config.spad_row_bytes

    async def memories(ctx):
        sampled = (dut.spad.addr, dut.spad.en, dut.acc_rd_a.addr, dut.acc_rd_a.en, dut.acc_rd_b.addr,
                   dut.acc_rd_b.en, dut.acc_wr.addr, dut.acc_wr.en, dut.acc_wr.data)
        garbage = [_pack(rng.integers(-9, 9, config.cols), np.int32)] * 2
        answers = [garbage] * (read_latency - 1)     # rows read, on their way to `data`
        async for _, _, sa, se, aa, ae, ba, be, wa, we, wd in ctx.tick().sample(*sampled):
            def write():
                if we:
                    acc[wa] = np.frombuffer(wd.to_bytes(4 * config.cols, "little"), dtype=np.int32)
            if transparent:
                write()
            # Data outside `en` is garbage: the engine must not use it.
            ctx.set(dut.spad.data, _pack(spad[sa], np.int8) if se else int(rng.integers(0, 2**62)) % 2**row_bits)
            answers.append([_pack(acc[addr], np.int32) if en else _pack(rng.integers(-9, 9, config.cols), np.int32)
                            for addr, en in ((aa, ae), (ba, be))])
            data_a, data_b = answers.pop(0)
            ctx.set(dut.acc_rd_a.data, data_a)
            ctx.set(dut.acc_rd_b.data, data_b)
            if not transparent:
                write()

    async def driver(ctx):
        t, j, wait = 0, 0, gaps[0] if gaps else 0
        while len(trace["done"]) < len(cmds):
            assert t < 50 * (len(cmds) + 1) + sum(c["rows"] for c in cmds) * 2, "engine hung"
            offering = j < len(cmds) and wait == 0
            if offering:
                if len(trace["offer"]) == j:
                    trace["offer"].append(t)
                ctx.set(dut.cmd, ComputeCmd.const(cmds[j]))
            ctx.set(dut.cmd_valid, offering)
            if offering and ctx.get(dut.cmd_ready):
                trace["accept"].append(t)
                j += 1
                wait = gaps[j] if j < len(cmds) else 0
            elif wait:
                wait -= 1
            if ctx.get(dut.done):
                trace["done"].append(t)
            trace["busy"].append(ctx.get(dut.busy))
            await ctx.tick()
            t += 1
        ctx.set(dut.cmd_valid, 0)
        for _ in range(3):  # nothing more may happen
            assert not ctx.get(dut.done) and not ctx.get(dut.busy)
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_process(memories)
    sim.add_testbench(driver)
    sim.run()
    return acc, trace


def check_timing(config, cmds, trace):
    """The module docstring's formulas: acceptance, done and busy cycles; returns the bubbles."""
    prev_ready = 0
    quant_row = None
    busy = set()
    total = 0
    for c, offer, acc_t, done_t in zip(cmds, trace["offer"], trace["accept"], trace["done"]):
        slots, done = compute_timing(config, c["op"], c["rows"])
        assert acc_t == max(offer, prev_ready), c
        bubbles, quant_row = vquant_bubbles(config, c["op"], c["rows"], c["src"], c["dst"], c["accumulate"],
                                            quant_row if acc_t == prev_ready else None)
        assert done_t == acc_t + done + bubbles, c
        prev_ready = acc_t + slots + bubbles
        total += bubbles
        busy.update(range(acc_t + 1, done_t + 1))
    assert [t for t, b in enumerate(trace["busy"]) if b] == sorted(busy)
    return total


def random_program(config, rng, n, window=24):
    """Random compute commands over a small window of rows, so that commands overlap and collide."""
    cmds = []
    for _ in range(n):
        op = rng.choice([Opcode.PRELOAD, Opcode.MATMUL, Opcode.MATMUL] + list(VECTOR))
        rows = 0 if rng.random() < 0.1 else int(rng.integers(1, 9))
        lim = window - max(rows, config.rows)
        cmds.append(_cmd(op, src=int(rng.integers(0, lim + 1)), dst=int(rng.integers(0, lim + 1)), rows=rows,
                         accumulate=int(rng.integers(0, 2)), mult=int(rng.integers(2**28, 2**31)),
                         shift=int(rng.integers(20, 40)), zp=int(rng.integers(-128, 128)),
                         relu=int(rng.integers(0, 2))))
    return cmds


def _state(config, rng, window=24):
    spad = rng.integers(-128, 128, (window, config.spad_row_bytes)).astype(np.int8)
    acc = rng.integers(-2**20, 2**20, (window, config.cols)).astype(np.int32)
    acc[0] = 2**31 - 1   # near the wrap
    return spad, acc


CONFIGS = {
    "4x4": load_config("4x4"),
    "2x4": HwConfig(name="2x4", rows=2, cols=4),
    "4x2": HwConfig(name="4x2", rows=4, cols=2),
    "4x4os": load_config("4x4").replace(name="4x4os", dataflow="output_stationary"),
    "2x4os": HwConfig(name="2x4os", rows=2, cols=4, dataflow="output_stationary"),
    "4x2os": HwConfig(name="4x2os", rows=4, cols=2, dataflow="output_stationary"),
    "4x4v2": load_config("4x4").replace(name="4x4v2", vector_stages=2),
    "2x4osv2": HwConfig(name="2x4osv2", rows=2, cols=4, dataflow="output_stationary", vector_stages=2),
}


def _case(name):
    """A CONFIGS entry, with ``@2``: the accumulator's reads take two cycles (the FPGA datapath)."""
    base, _, latency = name.partition("@")
    return CONFIGS[base], int(latency or 1)


@pytest.mark.parametrize("name, transparent, gapped", [
    ("4x4", False, False), ("4x4", True, True), ("2x4", False, True), ("4x2", True, False),
    ("4x4os", True, False), ("2x4os", False, True), ("4x2os", False, False), ("4x4v2", False, False),
    ("4x4v2", True, True), ("2x4osv2", False, False), ("4x4@2", True, False), ("4x4v2@2", False, True),
    ("4x4v2@2", True, False), ("2x4osv2@2", True, True)])
def test_random_commands_match_isa(name, transparent, gapped):
    config, latency = _case(name)
    rng = np.random.default_rng(sum(map(ord, name)) + 2 * transparent + gapped)
    cmds = random_program(config, rng, 40)
    spad, acc = _state(config, rng)
    gaps = [int(g) for g in rng.integers(0, 4, len(cmds))] if gapped else None
    got, trace = run_engine(config, cmds, spad, acc, transparent=transparent, gaps=gaps, seed=3,
                            read_latency=latency)
    want = isa_model(config, cmds, spad, acc)
    for r in range(len(acc)):
        assert got[r].tolist() == want[r].tolist(), f"acc row {r}"
    check_timing(config, cmds, trace)


@pytest.mark.parametrize("name", ["4x4", "4x4os", "4x4v2", "4x4v2@2"])
def test_dependent_chain_back_to_back(name):
    # Each command reads rows the one before it is still writing: the forwarding paths, at distance 1 and 2
    # (and 3 with two-cycle reads).
    config, latency = _case(name)
    rng = np.random.default_rng(21)
    spad, acc = _state(config, rng)
    q = dict(mult=2**30, shift=31, zp=3, relu=1)
    cmds = [
        _cmd(Opcode.PRELOAD, src=0),
        _cmd(Opcode.MATMUL, src=4, dst=8, rows=3),
        _cmd(Opcode.MATMUL, src=5, dst=8, rows=3, accumulate=1),
        _cmd(Opcode.MATMUL, src=6, dst=9, rows=1, accumulate=1),
        _cmd(Opcode.VADD, src=8, dst=10, rows=2),
        _cmd(Opcode.VADD, src=10, dst=11, rows=4),     # overlapping: row i reads row i-1's result
        _cmd(Opcode.VMAX, src=11, dst=13, rows=2),
        _cmd(Opcode.VRELU, src=13, dst=12, rows=3),
        _cmd(Opcode.VQUANT, src=12, dst=12, rows=3, **q),
        _cmd(Opcode.MATMUL, src=0, dst=13, rows=0, accumulate=1),
        _cmd(Opcode.MATMUL, src=1, dst=12, rows=1, accumulate=1),
    ]
    for transparent in (False, True):
        got, trace = run_engine(config, cmds, spad, acc, transparent=transparent, read_latency=latency)
        np.testing.assert_array_equal(got, isa_model(config, cmds, spad, acc))
        check_timing(config, cmds, trace)


def test_two_stage_vector_bubbles():
    # vector_stages: 2: a slot that reads the row the VQUANT slot just before it writes waits one cycle;
    # every other order runs without a gap. Results stay those of the ISA.
    config = CONFIGS["4x4v2"]
    rng = np.random.default_rng(5)
    spad, acc = _state(config, rng)
    q = dict(mult=2**30, shift=31, zp=3, relu=0)
    cmds = [
        _cmd(Opcode.VQUANT, src=4, dst=5, rows=4, **q),    # each slot reads the row the slot before wrote: 3
        _cmd(Opcode.VADD, src=8, dst=9, rows=2),           # reads row 8 = the last VQUANT row: 1
        _cmd(Opcode.VQUANT, src=9, dst=9, rows=3, **q),    # in place: 0
        _cmd(Opcode.MATMUL, src=0, dst=11, rows=2, accumulate=1),   # accumulates into row 11: 1
        _cmd(Opcode.VQUANT, src=12, dst=14, rows=1, **q),  # 0
        _cmd(Opcode.MATMUL, src=0, dst=14, rows=1),        # writes row 14 but does not read it: 0
        _cmd(Opcode.VQUANT, src=2, dst=3, rows=0, **q),    # rows 0: no slot work: 0
        _cmd(Opcode.VRELU, src=3, dst=2, rows=1),          # 0
        _cmd(Opcode.VQUANT, src=16, dst=16, rows=1, **q),  # 0
        _cmd(Opcode.VMAX, src=0, dst=16, rows=1),          # reads row 16 through dst: 1
        _cmd(Opcode.VQUANT, src=17, dst=18, rows=1, **q),  # 0
        _cmd(Opcode.VQUANT, src=18, dst=19, rows=2, **q),  # reads row 18, then row 19 written just before: 2
    ]
    for transparent, latency in ((False, 1), (True, 1), (False, 2), (True, 2)):
        got, trace = run_engine(config, cmds, spad, acc, transparent=transparent, read_latency=latency)
        np.testing.assert_array_equal(got, isa_model(config, cmds, spad, acc))
        assert check_timing(config, cmds, trace) == 8
        assert np.diff(trace["accept"]).tolist() == [4 + 3, 2 + 1, 3, 2 + 1, 1, 1, 1, 1, 1, 1 + 1, 1]
    assert compute_timing(config, Opcode.VADD, 2) == (2, 2 + 7 + 3)    # one stage more than vector_stages: 1


@pytest.mark.parametrize("name, extra", [("4x4", 0), ("4x4os", 1)])
def test_preload_matmul_cycles(name, extra):
    # The documented formula, with numbers: 4x4, PRELOAD then MATMUL of 64 rows, offered back to back.
    # Output-stationary has one more cycle of array latency.
    config = CONFIGS[name]
    rng = np.random.default_rng(4)
    spad = rng.integers(-128, 128, (72, 4)).astype(np.int8)
    acc = np.zeros((64, 4), dtype=np.int32)
    cmds = [_cmd(Opcode.PRELOAD, src=64), _cmd(Opcode.MATMUL, src=0, dst=0, rows=64)]
    got, trace = run_engine(config, cmds, spad, acc)
    np.testing.assert_array_equal(got, isa_model(config, cmds, spad, acc))
    a0 = trace["accept"][0]
    assert trace["accept"][1] - a0 == 4                  # PRELOAD: R slots
    assert trace["done"][0] - a0 == 4 + 4 + 4 + 1 + extra        # S + R + C + 1 (+1)
    assert trace["done"][1] - a0 == 4 + 64 + 4 + 4 + 1 + extra   # 77 (78) cycles from the first acceptance
    assert compute_timing(config, Opcode.MATMUL, 64) == (64, 73 + extra)
    check_timing(config, cmds, trace)


def test_rows_zero_and_foreign_opcodes_only_signal_done():
    config = CONFIGS["2x4"]
    rng = np.random.default_rng(2)
    spad, acc = _state(config, rng)
    cmds = [_cmd(op, src=1, dst=2, rows=r) for op, r in
            [(Opcode.MATMUL, 0), (Opcode.VADD, 0), (Opcode.NOP, 5), (Opcode.LOAD_SP, 3), (Opcode.VQUANT, 0)]]
    got, trace = run_engine(config, cmds, spad, acc)
    np.testing.assert_array_equal(got, acc)
    assert np.diff(trace["accept"]).tolist() == [1, 1, 5, 3]
    check_timing(config, cmds, trace)


@pytest.mark.parametrize("name, n", [("4x4", 12), ("8x8", 8), ("4x2os", 5)])
def test_steady_state_pairs(name, n):
    # PRELOAD + MATMUL(n) pairs offered back to back cost R + n cycles each.
    config = CONFIGS.get(name) or load_config(name)
    R = config.rows
    rng = np.random.default_rng(8)
    spad = rng.integers(-128, 128, (n + 3 * R, config.spad_row_bytes)).astype(np.int8)
    acc = np.zeros((n, config.cols), dtype=np.int32)
    cmds = []
    for p in range(3):
        cmds += [_cmd(Opcode.PRELOAD, src=n + p * R), _cmd(Opcode.MATMUL, src=0, dst=0, rows=n, accumulate=p > 0)]
    got, trace = run_engine(config, cmds, spad, acc)
    np.testing.assert_array_equal(got, isa_model(config, cmds, spad, acc))
    pair_starts = trace["accept"][::2]
    assert np.diff(pair_starts).tolist() == [R + n, R + n]
    check_timing(config, cmds, trace)


def test_rejects_non_config():
    with pytest.raises(TypeError, match="HwConfig"):
        ComputeEngine({"rows": 4})


@pytest.mark.parametrize("config", [CONFIGS["2x4"], CONFIGS["4x2os"]], ids=lambda c: c.name)
def test_port_widths_follow_config(config):
    dut = ComputeEngine(config)
    Fragment.get(dut, None)  # it must also elaborate
    assert len(dut.spad.data) == 8 * config.spad_row_bytes
    for port in (dut.acc_rd_a.data, dut.acc_rd_b.data, dut.acc_wr.data):
        assert len(port) == 32 * config.cols
    assert len(dut.cmd.as_value()) == ComputeCmd.as_shape().size


@pytest.mark.slow
def test_largest_preset_elaborates():
    from amaranth.back import rtlil
    for dataflow in ("weight_stationary", "output_stationary"):
        assert "pe_15_15" in rtlil.convert(ComputeEngine(load_config("16x16").replace(dataflow=dataflow)))


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_many_random_commands(name):
    # The reduced form above runs 40 commands per case; this one runs 600 per config.
    config = CONFIGS[name]
    for seed in range(3):
        rng = np.random.default_rng(1000 + seed)
        cmds = random_program(config, rng, 200)
        spad, acc = _state(config, rng)
        gaps = [int(g) for g in rng.integers(0, 3, len(cmds)) * (rng.random(len(cmds)) < 0.3)]
        got, trace = run_engine(config, cmds, spad, acc, transparent=bool(seed % 2), gaps=gaps, seed=seed)
        np.testing.assert_array_equal(got, isa_model(config, cmds, spad, acc))
        check_timing(config, cmds, trace)
