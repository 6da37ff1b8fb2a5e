"""LoadEngine against the numpy model (hw/dma_model.py): data, ordering, and the documented cycle formula."""

import numpy as np
import pytest
from amaranth.sim import Simulator

from npuforge.config import HwConfig, load_config
from npuforge.hw.dma_load import LoadEngine
from npuforge.hw.dma_model import DmaOp, DramSim, load_rows, load_timing
from npuforge.hw.interfaces import DmaCmd
from npuforge.isa.spec import Opcode

IMAGE_BYTES = 4096


def small_config(beat, latency, rows=4, cols=4, **kw):
    return HwConfig(rows=rows, cols=cols, spad_kib=1, acc_kib=1, dram_bytes_per_cycle=beat,
                    dram_latency=latency, **kw)


def random_load(rng, cfg, image_bytes=IMAGE_BYTES):
    """A random legal load command whose rows all fit the scratchpad / accumulator and the image."""
    op = [Opcode.LOAD_SP, Opcode.LOAD_ACC8, Opcode.LOAD_ACC32][rng.integers(3)]
    rows = int(rng.choice([0, 1, 1, 2, 3, 5, 8]))
    maxlen = cfg.spad_row_bytes if op == Opcode.LOAD_SP else cfg.cols
    length = int(rng.choice([0, maxlen, int(rng.integers(1, maxlen + 1))]))
    nbytes = length * (4 if op == Opcode.LOAD_ACC32 else 1)
    stride = int(rng.choice([0, nbytes, int(rng.integers(0, 80))]))
    span = (rows - 1) * stride + nbytes if rows else 0
    dram = int(rng.integers(0, image_bytes - span + 1))
    nrows = cfg.spad_rows if op == Opcode.LOAD_SP else cfg.acc_rows
    # Few distinct rows so that later commands overwrite earlier ones (order must be kept).
    mem = int(rng.integers(0, min(nrows, 16) - rows + 1)) if rows <= 16 else 0
    return DmaOp(op, mem, dram, rows, length, stride)


def run_loads(cfg, cmds, image, ready=None, offer_at=None, max_cycles=20000):
    """Run commands through a LoadEngine against DramSim; return (spad, acc, accepts, dones, dram)."""
    dut = LoadEngine(cfg)
    dram = DramSim(image, cfg.dram_bytes_per_cycle, cfg.dram_latency, ready)
    spad = np.zeros((cfg.spad_rows, cfg.spad_row_bytes), dtype=np.int8)
    acc = np.zeros((cfg.acc_rows, cfg.cols), dtype=np.int32)
    accepts, dones, busy_bad = [], [], []

    async def tb(ctx):
        n = 0
        for cyc in range(max_cycles):
            # busy counts commands accepted in earlier cycles and not done in earlier cycles.
            if ctx.get(dut.busy) != (len(accepts) > len(dones)):
                busy_bad.append(cyc)
            dram.drive(ctx, dut.dram, cyc)
            offer = n < len(cmds) and (offer_at is None or cyc >= offer_at[n])
            ctx.set(dut.cmd_valid, offer)
            if offer:
                ctx.set(dut.cmd, DmaCmd.const(cmds[n].fields()))
            dram.sample(ctx, dut.dram, cyc)
            if offer and ctx.get(dut.cmd_ready):
                accepts.append(cyc)
                n += 1
            if ctx.get(dut.spad_wr.en):
                spad[ctx.get(dut.spad_wr.addr)] = np.frombuffer(
                    ctx.get(dut.spad_wr.data).to_bytes(cfg.spad_row_bytes, "little"), dtype=np.int8)
            if ctx.get(dut.acc_wr.en):
                acc[ctx.get(dut.acc_wr.addr)] = np.frombuffer(
                    ctx.get(dut.acc_wr.data).to_bytes(4 * cfg.cols, "little"), dtype="<i4")
            if ctx.get(dut.done):
                dones.append(cyc)
            if len(dones) == len(cmds):
                break
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
    assert len(dones) == len(cmds), f"only {len(dones)} of {len(cmds)} commands done"
    assert not busy_bad, f"busy wrong in cycles {busy_bad[:5]}"
    return spad, acc, accepts, dones, dram


def expected_memories(cfg, cmds, image):
    spad = np.zeros((cfg.spad_rows, cfg.spad_row_bytes), dtype=np.int8)
    acc = np.zeros((cfg.acc_rows, cfg.cols), dtype=np.int32)
    for c in cmds:
        target = spad if c.op == Opcode.LOAD_SP else acc
        target[c.mem:c.mem + c.rows] = load_rows(c, image, cfg)
    return spad, acc


@pytest.mark.parametrize("beat,latency,seed,shape", [(4, 3, 1, 4), (8, 5, 2, 4), (16, 9, 3, 4), (16, 1, 4, 4),
                                                     (1, 2, 5, 4), (64, 3, 6, 4), (4, 2, 7, 8), (32, 4, 8, 8)])
def test_random_loads_bit_exact(beat, latency, seed, shape):
    cfg = small_config(beat, latency, rows=shape, cols=shape)
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, IMAGE_BYTES, dtype=np.uint8)
    cmds = [random_load(rng, cfg) for _ in range(14)]
    spad, acc, _, dones, dram = run_loads(cfg, cmds, image)
    want_spad, want_acc = expected_memories(cfg, cmds, image)
    np.testing.assert_array_equal(spad, want_spad)
    np.testing.assert_array_equal(acc, want_acc)
    assert all(not w for _, w, _ in dram.accepted), "the load engine must only read"


def test_random_loads_with_backpressure_and_late_offers():
    cfg = small_config(8, 6, rows=8, cols=4)       # spad rows of 8 bytes, accumulator rows of 16
    rng = np.random.default_rng(11)
    image = rng.integers(0, 256, IMAGE_BYTES, dtype=np.uint8)
    cmds = [random_load(rng, cfg) for _ in range(12)]
    ready_rng = np.random.default_rng(12)
    pattern = ready_rng.random(20000) < 0.6
    offer_at = sorted(int(x) for x in rng.integers(0, 150, len(cmds)))
    spad, acc, *_ = run_loads(cfg, cmds, image, ready=lambda c: pattern[c], offer_at=offer_at)
    want_spad, want_acc = expected_memories(cfg, cmds, image)
    np.testing.assert_array_equal(spad, want_spad)
    np.testing.assert_array_equal(acc, want_acc)


def test_sign_extension_and_zero_fill():
    cfg = small_config(4, 2)
    image = np.arange(256, dtype=np.uint8)[::-1].copy()      # bytes >= 0x80 first: negative int8
    cmds = [DmaOp(Opcode.LOAD_ACC32, 0, 0, 2, 4, 0), DmaOp(Opcode.LOAD_ACC8, 0, 3, 1, 3, 0),
            DmaOp(Opcode.LOAD_SP, 2, 1, 2, 0, 7), DmaOp(Opcode.LOAD_SP, 0, 0, 0, 4, 4)]
    spad, acc, *_ = run_loads(cfg, cmds, image)
    assert list(acc[0]) == [int(x) for x in load_rows(DmaOp(Opcode.LOAD_ACC8, 0, 3, 1, 3, 0), image, cfg)[0]]
    assert acc[0, 0] == np.int8(image[3]) and acc[0, 3] == 0
    assert list(acc[1]) == list(np.frombuffer(image[:16].tobytes(), "<i4"))
    assert not spad.any()


@pytest.mark.parametrize("beat", [4, 16])
def test_back_to_back_cycles_match_formula(beat):
    cfg = small_config(beat, 7)
    rng = np.random.default_rng(20 + beat)
    image = rng.integers(0, 256, IMAGE_BYTES, dtype=np.uint8)
    cmds = [random_load(rng, cfg) for _ in range(10)]
    _, _, accepts, dones, _ = run_loads(cfg, cmds, image)
    assert list(zip(accepts, dones)) == load_timing(cmds, cfg)
    offer_at = sorted(int(x) for x in rng.integers(0, 200, len(cmds)))     # gaps and late offers
    _, _, accepts, dones, _ = run_loads(cfg, cmds, image, offer_at=offer_at)
    assert list(zip(accepts, dones)) == load_timing(cmds, cfg, offer_at)


def test_load_sp_256_rows_8x8_cycles():
    """The documented example: 256 rows of 8 bytes, stride 256, on the 8x8 preset's DRAM (B=16, L=32)."""
    cfg = load_config("8x8")
    assert (cfg.dram_bytes_per_cycle, cfg.dram_latency) == (16, 32)
    image = np.random.default_rng(5).integers(0, 256, 256 * 256, dtype=np.uint8)
    cmd = DmaOp(Opcode.LOAD_SP, 0, 0, 256, 8, 256)
    spad, _, accepts, dones, _ = run_loads(cfg, [cmd], image)
    assert dones[0] - accepts[0] == 256 + 32 + 2
    assert [(a, d) for a, d in zip(accepts, dones)] == load_timing([cmd], cfg)
    np.testing.assert_array_equal(spad[:256], load_rows(cmd, image, cfg))


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(100, 112))
def test_many_random_loads(seed):
    rng = np.random.default_rng(seed)
    beat = int(rng.choice([1, 2, 4, 8, 16, 32, 64]))
    shape = int(rng.choice([2, 4, 8]))
    cfg = small_config(beat, int(rng.integers(1, 40)), rows=shape, cols=shape)
    image = rng.integers(0, 256, IMAGE_BYTES, dtype=np.uint8)
    cmds = [random_load(rng, cfg) for _ in range(40)]
    pattern = rng.random(40000) < rng.uniform(0.3, 1.0)
    spad, acc, *_ = run_loads(cfg, cmds, image, ready=lambda c: pattern[c], max_cycles=40000)
    want_spad, want_acc = expected_memories(cfg, cmds, image)
    np.testing.assert_array_equal(spad, want_spad)
    np.testing.assert_array_equal(acc, want_acc)
