"""Whole NpuCore (real engines and memories) in amaranth.sim on 4x4, against the reference simulator.

A Python DRAM model in the testbench serves the core's DRAM port (fixed latency, one
beat per cycle). Results (the DRAM image), error code / index and counters must equal
the reference simulator's.
"""

from collections import deque

import numpy as np
import pytest
from amaranth.sim import Simulator

from npuforge.assembler.builder import ProgramBuilder
from npuforge.config import load_config
from npuforge.hw.core import NpuCore
from npuforge.hw.soc.multiport import OnFpga
from npuforge.isa import refsim
from npuforge.isa.spec import ErrorCode

CFG = load_config("4x4").replace(dram_latency=6, dram_mib=1, queue_depth=4, imem_words=64)


def run_core(words, dram_image, cfg, max_cycles=4000, runs=None, fpga=False):
    """Run ``words`` on NpuCore with a DRAM model; returns (error, error_pc, dram, counters dict).

    ``runs`` (a list of (words, dram image)) runs several programs one after the other on
    the same core and DRAM model, each from a ``start``, and returns the last run's figures;
    DRAM read responses still in flight at a ``start`` keep arriving, as from a real DRAM.
    ``fpga``: the core as an FPGA platform elaborates it (multi-port memories from 1W1R copies,
    two-cycle accumulator reads, the dispatcher's predecode), which must take the same cycles.
    """
    dut = NpuCore(cfg)
    B = cfg.dram_bytes_per_cycle
    runs = runs or [(words, dram_image)]
    dram = np.zeros(cfg.dram_bytes, np.uint8)
    out = {}

    async def tb(ctx):
        cycle = 0
        for words, dram_image in runs:
            dram[:] = 0
            dram[:len(dram_image)] = dram_image
            for i in range(cfg.imem_words):
                ctx.set(dut.imem_we, 1)
                ctx.set(dut.imem_addr, i)
                ctx.set(dut.imem_data, words[i] if i < len(words) else 0)
                await _step(ctx, cycle)
                cycle += 1
            ctx.set(dut.imem_we, 0)
            ctx.set(dut.dram.req_ready, 1)
            ctx.set(dut.start, 1)
            await _step(ctx, cycle)
            cycle += 1
            ctx.set(dut.start, 0)
            cycle = await _run(ctx, cycle)

    async def _step(ctx, cycle):
        # Responses owed from an earlier run keep coming while the host reloads.
        await _serve(ctx, cycle)
        await ctx.tick()

    async def _serve(ctx, cycle):
        port = dut.dram
        if pending and pending[0][0] <= cycle:
            _, beat = pending.popleft()
            ctx.set(port.resp_valid, 1)
            ctx.set(port.resp_rdata, int.from_bytes(dram[beat * B:(beat + 1) * B].tobytes(), "little"))
        else:
            ctx.set(port.resp_valid, 0)

    pending = deque()

    async def _run(ctx, cycle0):
        port = dut.dram
        for cycle in range(cycle0, cycle0 + max_cycles):
            await _serve(ctx, cycle)
            if ctx.get(dut.done):
                c = ctx.get(dut.counters)
                out["result"] = (ErrorCode(ctx.get(dut.error)), ctx.get(dut.error_pc),
                                 {n: getattr(c, n) for n in ("cycles", "instructions", "dram_read_bytes",
                                                             "dram_write_bytes", "compute_busy")})
                return cycle
            if ctx.get(port.req_valid):
                beat = ctx.get(port.req_addr)
                if ctx.get(port.req_write):
                    data = ctx.get(port.req_wdata)
                    strb = ctx.get(port.req_wstrb)
                    for j in range(B):
                        if strb >> j & 1:
                            dram[beat * B + j] = data >> (8 * j) & 0xFF
                else:
                    pending.append((cycle + cfg.dram_latency, beat))
            await ctx.tick()
        raise AssertionError(f"core not done after {max_cycles} cycles")

    sim = Simulator(OnFpga(dut) if fpga else dut)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
    code, pc, counters = out["result"]
    return code, pc, dram, counters


def matmul_program(cfg, m_rows, a_addr, w_addr, c_addr, accumulate_twice=False):
    """Load A (m x rows) and W (rows x cols), C = A @ W (int32) stored to DRAM; tokens in between."""
    b = ProgramBuilder(cfg)
    b.emit("load.sp", sp=0, dram=a_addr, rows=m_rows, len=cfg.rows, stride=cfg.rows)
    b.emit("load.sp", sp=32, dram=w_addr, rows=cfg.rows, len=cfg.cols, stride=cfg.cols, deps=["push_next"])
    b.emit("preload", sp=32, deps=["pop_prev"])
    b.emit("matmul", acc=0, sp=0, rows=m_rows)
    if accumulate_twice:
        b.emit("matmul", acc=0, sp=0, rows=m_rows, accumulate=True)
    b.emit("vrelu", dst=16, src=0, rows=m_rows, deps=["push_next"])
    b.emit("store.acc32", dram=c_addr, acc=0, rows=m_rows, len=cfg.cols, stride=4 * cfg.cols, deps=["pop_prev"])
    b.emit("seti", rd=3, imm=(1 << 20) + 3)
    b.emit("store.acc8", dram=c_addr + 512, acc=16, rows=m_rows, len=cfg.cols, stride=cfg.cols, qreg=3,
           shift=5, zp=-3)
    b.emit("halt")
    return b.words()


@pytest.mark.parametrize("accumulate_twice, fpga", [(False, False), (True, False), (True, True)])
def test_load_matmul_store_matches_reference(accumulate_twice, fpga):
    rng = np.random.default_rng(7)
    m_rows = 6
    image = np.zeros(4096, np.uint8)
    image[:m_rows * CFG.rows] = rng.integers(0, 256, m_rows * CFG.rows)
    image[1000:1000 + CFG.rows * CFG.cols] = rng.integers(0, 256, CFG.rows * CFG.cols)
    words = matmul_program(CFG, m_rows, 0, 1000, 2003, accumulate_twice)
    ref = refsim.run(words, image, CFG)
    code, pc, dram, counters = run_core(words, image, CFG, fpga=fpga)
    assert (code, pc) == (ErrorCode.NONE, 0)
    diff = np.flatnonzero(dram != ref.dram)
    assert diff.size == 0, f"first DRAM mismatch at byte {diff[0]}: rtl {dram[diff[0]]}, ref {ref.dram[diff[0]]}"
    assert np.any(ref.dram[2003:2003 + 16] != 0)
    assert counters["instructions"] == ref.dispatched
    assert counters["dram_read_bytes"] == ref.dram_read_bytes
    assert counters["dram_write_bytes"] == ref.dram_write_bytes
    assert 0 < counters["compute_busy"] < counters["cycles"]
    if fpga:    # the FPGA form keeps every cycle of the core as simulated
        assert counters == run_core(words, image, CFG)[3]


def test_illegal_opcode_stops_without_writing():
    b = ProgramBuilder(CFG)
    b.emit("load.sp", sp=0, dram=0, rows=2, len=4, stride=4, deps=["push_next"])
    b.emit("store.sp", dram=64, sp=0, rows=2, len=4, stride=4)
    words = b.words() + [0]            # opcode 0 at index 2
    image = np.arange(16, dtype=np.uint8) + 1
    with pytest.raises(refsim.SimError) as e:
        refsim.run(words, image, CFG)
    code, pc, dram, _ = run_core(words, image, CFG)
    assert (code, pc) == (e.value.code, e.value.pc) == (ErrorCode.ILLEGAL_INSTR, 2)


def test_address_error():
    b = ProgramBuilder(CFG)
    b.emit("seti", rd=4, imm=CFG.acc_rows - 2)
    b.emit("matmul", acc=(4, 0), sp=0, rows=3)
    words = b.words()
    code, pc, _, _ = run_core(words, np.zeros(16, np.uint8), CFG)
    with pytest.raises(refsim.SimError) as e:
        refsim.run(words, np.zeros(16, np.uint8), CFG)
    assert (code, pc) == (e.value.code, e.value.pc) == (ErrorCode.ADDR_RANGE, 1)


def test_deadlock_store_waits_forever():
    b = ProgramBuilder(CFG)
    b.emit("load.sp", sp=0, dram=0, rows=1, len=4, stride=4)
    b.emit("store.sp", dram=64, sp=0, rows=1, len=4, stride=4, deps=["pop_prev"])   # nobody pushes C2S
    b.emit("halt")
    words = b.words()
    code, pc, _, _ = run_core(words, np.zeros(16, np.uint8), CFG)
    with pytest.raises(refsim.SimError) as e:
        refsim.run(words, np.zeros(16, np.uint8), CFG)
    assert (code, pc) == (e.value.code, e.value.pc) == (ErrorCode.DEADLOCK, 1)


def test_compute_stream_has_no_gaps():
    """PRELOAD / MATMUL pairs without tokens keep the compute engine busy back to back.

    The compute engine's docstring: S slots per command, issued without gaps when the next
    command is offered in time; busy runs from the first acceptance + 1 to the last done,
    so busy = sum(S) + R + C + 1 when the sequencer never starves it.
    """
    cfg = CFG
    n, pairs = 8, 4
    b = ProgramBuilder(cfg)
    for p in range(pairs):
        b.emit("preload", sp=4 * p)
        b.emit("matmul", acc=0, sp=0, rows=n, accumulate=p > 0)
    b.emit("halt")
    code, pc, _, counters = run_core(b.words(), np.zeros(16, np.uint8), cfg)
    assert code == ErrorCode.NONE
    assert counters["compute_busy"] == pairs * (cfg.rows + n) + cfg.rows + cfg.cols + 1


def test_restart_after_error_drops_stale_read_responses():
    """An error leaves DRAM reads in flight; their responses arrive after the next start
    (the DRAM latency is longer than the reload) and must not reach the new run's loads."""
    cfg = CFG.replace(dram_latency=90)
    b = ProgramBuilder(cfg)
    b.emit("load.sp", sp=0, dram=0, rows=8, len=4, stride=4)
    for _ in range(8):
        b.emit("nop")
    first = b.words() + [0]                          # illegal at index 9, loads still reading
    rng = np.random.default_rng(3)
    image = np.zeros(4096, np.uint8)
    image[:4 * cfg.rows] = rng.integers(0, 256, 4 * cfg.rows)
    image[1000:1000 + cfg.rows * cfg.cols] = rng.integers(0, 256, cfg.rows * cfg.cols)
    second = matmul_program(cfg, 4, 0, 1000, 2003)
    ref = refsim.run(second, image, cfg)
    code, pc, dram, _ = run_core(None, None, cfg, runs=[(first, np.full(64, 0xEE, np.uint8)), (second, image)])
    assert (code, pc) == (ErrorCode.NONE, 0)
    assert np.array_equal(dram, ref.dram)
