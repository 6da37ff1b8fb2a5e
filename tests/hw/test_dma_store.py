"""StoreEngine against the numpy model (hw/dma_model.py): DRAM bytes, strobes, ordering, cycle formula."""

import numpy as np
import pytest
from amaranth.sim import Simulator

from npuforge.config import HwConfig, load_config
from npuforge.hw.dma_model import DmaOp, DramSim, store_rows, store_timing
from npuforge.hw.dma_store import StoreEngine
from npuforge.hw.interfaces import DmaCmd
from npuforge.isa.spec import Opcode

IMAGE_BYTES = 4096


def small_config(beat, latency=4, rows=4, cols=4):
    return HwConfig(rows=rows, cols=cols, spad_kib=1, acc_kib=1, dram_bytes_per_cycle=beat, dram_latency=latency)


def random_store(rng, cfg, image_bytes=IMAGE_BYTES):
    op = [Opcode.STORE_ACC32, Opcode.STORE_ACC8, Opcode.STORE_SP][rng.integers(3)]
    rows = int(rng.choice([0, 1, 1, 2, 3, 5, 8]))
    maxlen = cfg.spad_row_bytes if op == Opcode.STORE_SP else cfg.cols
    length = int(rng.choice([0, maxlen, int(rng.integers(1, maxlen + 1))]))
    nbytes = length * (4 if op == Opcode.STORE_ACC32 else 1)
    # Small strides make rows overlap in DRAM: the later row must win.
    stride = int(rng.choice([0, nbytes, int(rng.integers(0, 60))]))
    span = (rows - 1) * stride + nbytes if rows else 0
    dram = int(rng.integers(0, min(image_bytes, 512) - span + 1))     # a small window: commands overlap
    nrows = cfg.spad_rows if op == Opcode.STORE_SP else cfg.acc_rows
    mem = int(rng.integers(0, nrows - rows + 1))
    mult = int(rng.integers(-2**31, 2**31))
    return DmaOp(op, mem, dram, rows, length, stride, mult=mult, shift=int(rng.integers(0, 64)),
                 zp=int(rng.integers(-128, 128)), relu=bool(rng.integers(2)))


def run_stores(cfg, cmds, image, spad, acc, ready=None, offer_at=None, max_cycles=20000, requant_latency=2):
    """Run commands through a StoreEngine against DramSim; return (dram, accepts, dones)."""
    dut = StoreEngine(cfg, requant_latency=requant_latency)
    dram = DramSim(image, cfg.dram_bytes_per_cycle, cfg.dram_latency, ready)
    accepts, dones, busy_bad = [], [], []

    async def tb(ctx):
        n = 0
        rd = {"spad": None, "acc": None}       # row read in the previous cycle
        for cyc in range(max_cycles):
            if ctx.get(dut.busy) != (len(accepts) > len(dones)):
                busy_bad.append(cyc)
            if rd["spad"] is not None:
                ctx.set(dut.spad_rd.data, int.from_bytes(spad[rd["spad"]].tobytes(), "little"))
            if rd["acc"] is not None:
                ctx.set(dut.acc_rd.data, int.from_bytes(acc[rd["acc"]].astype("<i4").tobytes(), "little"))
            dram.drive(ctx, dut.dram, cyc)
            offer = n < len(cmds) and (offer_at is None or cyc >= offer_at[n])
            ctx.set(dut.cmd_valid, offer)
            if offer:
                ctx.set(dut.cmd, DmaCmd.const(cmds[n].fields()))
            dram.sample(ctx, dut.dram, cyc)
            if offer and ctx.get(dut.cmd_ready):
                accepts.append(cyc)
                n += 1
            rd["spad"] = ctx.get(dut.spad_rd.addr) if ctx.get(dut.spad_rd.en) else None
            rd["acc"] = ctx.get(dut.acc_rd.addr) if ctx.get(dut.acc_rd.en) else None
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
    assert all(w for _, w, _ in dram.accepted), "the store engine must only write"
    return dram, accepts, dones


def random_memories(rng, cfg):
    spad = rng.integers(-128, 128, (cfg.spad_rows, cfg.spad_row_bytes), dtype=np.int8)
    acc = rng.integers(-2**31, 2**31, (cfg.acc_rows, cfg.cols), dtype=np.int64).astype(np.int32)
    acc[::3] //= 1 << 20      # some small values so that requant does not always saturate
    return spad, acc


def expected_dram(cmds, image, spad, acc):
    want = image.copy()
    for c in cmds:
        src = spad if c.op == Opcode.STORE_SP else acc
        store_rows(c, src[c.mem:c.mem + c.rows], want)
    return want


@pytest.mark.parametrize("beat,seed,latency,shape", [(4, 1, 2, 4), (8, 2, 2, 4), (16, 3, 2, 4), (16, 4, 0, 4),
                                                     (8, 5, 1, 4), (1, 6, 2, 4), (64, 7, 2, 4), (4, 8, 2, 8),
                                                     (32, 9, 1, 8)])
def test_random_stores_bit_exact(beat, seed, latency, shape):
    cfg = small_config(beat, rows=shape, cols=shape)
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, IMAGE_BYTES, dtype=np.uint8)
    spad, acc = random_memories(rng, cfg)
    cmds = [random_store(rng, cfg) for _ in range(14)]
    dram, *_ = run_stores(cfg, cmds, image, spad, acc, requant_latency=latency)
    np.testing.assert_array_equal(dram.mem, expected_dram(cmds, image, spad, acc))


def test_random_stores_with_backpressure_and_late_offers():
    cfg = small_config(8, rows=8, cols=4)
    rng = np.random.default_rng(31)
    image = rng.integers(0, 256, IMAGE_BYTES, dtype=np.uint8)
    spad, acc = random_memories(rng, cfg)
    cmds = [random_store(rng, cfg) for _ in range(12)]
    pattern = np.random.default_rng(32).random(20000) < 0.5
    offer_at = sorted(int(x) for x in rng.integers(0, 120, len(cmds)))
    dram, *_ = run_stores(cfg, cmds, image, spad, acc, ready=lambda c: pattern[c], offer_at=offer_at)
    np.testing.assert_array_equal(dram.mem, expected_dram(cmds, image, spad, acc))


def test_strobes_leave_neighbours_untouched():
    cfg = small_config(16)
    image = np.full(IMAGE_BYTES, 0xEE, dtype=np.uint8)
    spad = np.arange(cfg.spad_rows * cfg.spad_row_bytes, dtype=np.int64).astype(np.int8).reshape(cfg.spad_rows, -1)
    acc = np.arange(cfg.acc_rows * cfg.cols, dtype=np.int32).reshape(cfg.acc_rows, -1) - 40
    cmds = [DmaOp(Opcode.STORE_ACC32, 3, 13, 1, 3, 0),            # 12 bytes across a beat boundary
            DmaOp(Opcode.STORE_SP, 1, 40, 2, 3, 5),
            DmaOp(Opcode.STORE_ACC8, 0, 70, 1, 4, 0, mult=1, shift=0, zp=0, relu=True)]
    dram, *_ = run_stores(cfg, cmds, image, spad, acc)
    want = expected_dram(cmds, image, spad, acc)
    np.testing.assert_array_equal(dram.mem, want)
    assert dram.mem[12] == 0xEE and dram.mem[25] == 0xEE and list(dram.mem[70:74]) == [0, 0, 0, 0]


@pytest.mark.parametrize("beat", [4, 16])
def test_back_to_back_cycles_match_formula(beat):
    cfg = small_config(beat)
    rng = np.random.default_rng(40 + beat)
    image = rng.integers(0, 256, IMAGE_BYTES, dtype=np.uint8)
    spad, acc = random_memories(rng, cfg)
    cmds = [random_store(rng, cfg) for _ in range(10)]
    _, accepts, dones = run_stores(cfg, cmds, image, spad, acc)
    assert list(zip(accepts, dones)) == store_timing(cmds, cfg, 2)
    offer_at = sorted(int(x) for x in rng.integers(0, 200, len(cmds)))     # gaps and late offers
    _, accepts, dones = run_stores(cfg, cmds, image, spad, acc, offer_at=offer_at)
    assert list(zip(accepts, dones)) == store_timing(cmds, cfg, 2, offer_at)


def test_store_acc32_256_rows_8x8_cycles():
    """The documented example: 256 rows of 8 int32 on the 8x8 preset's DRAM (B = 16), Q = 2."""
    cfg = load_config("8x8")
    assert (cfg.dram_bytes_per_cycle, cfg.dram_latency) == (16, 32)
    rng = np.random.default_rng(6)
    image = np.zeros(256 * 32, dtype=np.uint8)
    spad, acc = random_memories(rng, cfg)
    cmd = DmaOp(Opcode.STORE_ACC32, 0, 0, 256, 8, 32)
    dram, accepts, dones = run_stores(cfg, [cmd], image, spad, acc)
    assert dones[0] - accepts[0] == 512 + 2 + 3
    assert list(zip(accepts, dones)) == store_timing([cmd], cfg, 2)
    np.testing.assert_array_equal(dram.mem, expected_dram([cmd], image, spad, acc))


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(100, 112))
def test_many_random_stores(seed):
    rng = np.random.default_rng(seed)
    beat = int(rng.choice([1, 2, 4, 8, 16, 32, 64]))
    shape = int(rng.choice([2, 4, 8]))
    cfg = small_config(beat, rows=shape, cols=shape)
    image = rng.integers(0, 256, IMAGE_BYTES, dtype=np.uint8)
    spad, acc = random_memories(rng, cfg)
    cmds = [random_store(rng, cfg) for _ in range(40)]
    pattern = rng.random(40000) < rng.uniform(0.3, 1.0)
    latency = int(rng.integers(0, 3))
    dram, *_ = run_stores(cfg, cmds, image, spad, acc, ready=lambda c: pattern[c], max_cycles=40000,
                          requant_latency=latency)
    np.testing.assert_array_equal(dram.mem, expected_dram(cmds, image, spad, acc))
