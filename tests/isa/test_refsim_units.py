"""Each instruction of the reference simulator against plain numpy, row by row, on random data."""

import numpy as np
import pytest

from npuforge.assembler.builder import ProgramBuilder
from npuforge.config import load_config
from npuforge.isa.refsim import run
from npuforge.isa.semantics import requant

# Small DRAM keeps each run to milliseconds; a non-square array checks rows vs cols use.
CONFIGS = {name: load_config(name).replace(dram_mib=1) for name in ("4x4", "8x8", "16x16")}
CONFIGS["4x8"] = load_config("4x4").replace(cols=8, dram_mib=1)
CONFIGS["8x4"] = load_config("4x4").replace(rows=8, dram_mib=1)
ALL = pytest.mark.parametrize("name", list(CONFIGS))


def program(cfg, *body):
    """An image of ``body`` (``(mnemonic, operands)`` pairs, fences between them) then halt."""
    b = ProgramBuilder(cfg)
    for mnemonic, operands in body:
        b.emit(mnemonic, **operands)
    b.emit("halt")
    return b.image()


def op(mnemonic, **operands):
    return mnemonic, operands


FENCE = op("fence")


def random_dram(cfg, seed):
    return np.random.default_rng(seed).integers(0, 256, cfg.dram_bytes, dtype=np.uint8)


def dram_rows(dram, first, rows, nbytes, stride):
    return np.array([dram[first + i * stride:first + i * stride + nbytes] for i in range(rows)],
                    dtype=np.uint8).reshape(rows, nbytes)


def acc_from(cfg, addr, rows):
    """Fill accumulator rows 0..rows-1 from int32 DRAM data (the op under test's source)."""
    return op("load.acc32", acc=0, dram=addr, rows=rows, len=cfg.cols, stride=4 * cfg.cols)


# ---- loads ----------------------------------------------------------------------------------

@ALL
@pytest.mark.parametrize("seed", [1, 2])
def test_load_sp_strided_with_zero_fill(name, seed):
    cfg = CONFIGS[name]
    rng = np.random.default_rng(seed)
    dram = random_dram(cfg, seed)
    rows, length = int(rng.integers(1, 40)), int(rng.integers(1, cfg.spad_row_bytes + 1))
    stride, addr, sp = int(rng.integers(0, 100)), int(rng.integers(0, 5000)), int(rng.integers(0, 100))
    # A full-width load first, so that the zero fill past len is visible.
    image = program(cfg, op("load.sp", sp=sp, dram=77, rows=rows, len=cfg.spad_row_bytes, stride=3), FENCE,
                    op("seti", rd=3, imm=addr - 10),
                    op("load.sp", sp=sp, dram=(3, 10), rows=rows, len=length, stride=stride))
    res = run(image, dram, cfg)
    want = np.zeros((rows, cfg.spad_row_bytes), np.uint8)
    want[:, :length] = dram_rows(dram, addr, rows, length, stride)
    assert np.array_equal(res.spad[sp:sp + rows].view(np.uint8), want)
    assert not res.spad[sp + rows:].any() and not res.spad[:sp].any()
    assert res.dram_read_bytes == rows * cfg.spad_row_bytes + rows * length
    assert np.array_equal(res.dram, dram)


def test_load_len0_zero_fills_without_reading_dram():
    cfg = CONFIGS["8x8"]
    dram = random_dram(cfg, 3)
    image = program(cfg, op("load.sp", sp=5, dram=0, rows=4, len=8, stride=8),
                    op("load.acc32", acc=2, dram=0, rows=3, len=8, stride=32), FENCE,
                    # The DRAM address is out of range: with len=0 it is never checked nor read.
                    op("load.sp", sp=6, dram=0xFFFFFF, rows=2, len=0, stride=0xFFFFFF),
                    op("load.acc8", acc=3, dram=0xFFFFFF, rows=1, len=0, stride=0))
    res = run(image, dram, cfg)
    assert res.spad[5].any() and not res.spad[6:8].any() and res.spad[8].any()
    assert res.acc[2].any() and not res.acc[3].any() and res.acc[4].any()
    assert res.dram_read_bytes == 4 * 8 + 3 * 32


@ALL
def test_load_acc8_sign_extends(name):
    cfg = CONFIGS[name]
    dram = np.arange(256, dtype=np.uint8)      # every byte value, 0x80..0xff are negative
    rows = 256 // cfg.cols
    res = run(program(cfg, op("load.acc8", acc=1, dram=0, rows=rows, len=cfg.cols, stride=cfg.cols)), dram, cfg)
    assert np.array_equal(res.acc[1:1 + rows].ravel(), np.arange(256, dtype=np.uint8).view(np.int8))
    assert res.acc[1:1 + rows].min() == -128 and res.acc[1:1 + rows].max() == 127


@ALL
def test_load_acc32_little_endian_unaligned(name):
    cfg = CONFIGS[name]
    dram = random_dram(cfg, 4)
    length, stride, rows = cfg.cols - 1, 4 * cfg.cols + 3, 5
    res = run(program(cfg, op("load.acc32", acc=7, dram=1001, rows=rows, len=length, stride=stride)), dram, cfg)
    for i in range(rows):
        row = dram[1001 + i * stride:1001 + i * stride + 4 * length]
        want = [int.from_bytes(bytes(row[4 * j:4 * j + 4]), "little", signed=True) for j in range(length)]
        assert res.acc[7 + i, :length].tolist() == want
        assert res.acc[7 + i, length] == 0
    assert res.dram_read_bytes == rows * length * 4


# ---- array ----------------------------------------------------------------------------------

def matmul_program(cfg, rows, accumulate, w_sp=0, a_sp=100, acc=3):
    n = max(cfg.rows, rows)
    return program(
        cfg,
        op("load.sp", sp=w_sp, dram=0, rows=cfg.rows, len=cfg.spad_row_bytes, stride=cfg.spad_row_bytes),
        op("load.sp", sp=a_sp, dram=4096, rows=rows, len=cfg.spad_row_bytes, stride=cfg.spad_row_bytes),
        op("load.acc32", acc=acc, dram=8192, rows=n, len=cfg.cols, stride=4 * cfg.cols), FENCE,
        op("preload", sp=w_sp),
        op("matmul", acc=acc, sp=a_sp, rows=rows, accumulate=accumulate))


@ALL
@pytest.mark.parametrize("accumulate", [False, True])
def test_preload_matmul(name, accumulate):
    cfg = CONFIGS[name]
    dram = random_dram(cfg, 5)
    rows = 13
    res = run(matmul_program(cfg, rows, accumulate), dram, cfg)
    w = dram_rows(dram, 0, cfg.rows, cfg.spad_row_bytes, cfg.spad_row_bytes).view(np.int8)[:, :cfg.cols]
    a = dram_rows(dram, 4096, rows, cfg.spad_row_bytes, cfg.spad_row_bytes).view(np.int8)[:, :cfg.rows]
    old = dram_rows(dram, 8192, rows, 4 * cfg.cols, 4 * cfg.cols).copy().view("<i4")
    want = a.astype(np.int64) @ w.astype(np.int64) + (old if accumulate else 0)
    assert np.array_equal(res.acc[3:3 + rows], ((want + 2**31) % 2**32 - 2**31).astype(np.int32))
    assert res.array_macs == rows * cfg.rows * cfg.cols
    assert res.counts["matmul"] == 1 and res.counts["preload"] == 1


def test_matmul_accumulate_wraps_modulo_2_32():
    cfg = CONFIGS["4x4"]
    dram = np.zeros(16384, np.uint8)
    dram[0:16] = np.full(16, 127, np.uint8).view(np.uint8)            # W = 127 everywhere
    dram[4096:4100] = 127                                              # one activation row of 127
    dram[8192:8208] = np.full(4, 2**31 - 100, "<i4").view(np.uint8)    # near INT32_MAX
    res = run(matmul_program(CONFIGS["4x4"], 1, True, acc=0), dram, cfg)
    want = (2**31 - 100 + 4 * 127 * 127) - 2**32                       # wraps, never saturates
    assert res.acc[0].tolist() == [want] * 4


@ALL
def test_matmul_rows0_and_weights_persist(name):
    cfg = CONFIGS[name]
    dram = random_dram(cfg, 6)
    image = program(cfg, op("load.sp", sp=0, dram=0, rows=cfg.rows + 2, len=cfg.spad_row_bytes,
                            stride=cfg.spad_row_bytes), FENCE,
                    op("preload", sp=0),
                    op("matmul", acc=0, sp=0, rows=0),      # touches nothing
                    op("matmul", acc=1, sp=1, rows=2),
                    op("matmul", acc=3, sp=cfg.rows, rows=2))  # same weights, different rows
    res = run(image, dram, cfg)
    sp = res.spad.astype(np.int64)
    w = sp[:cfg.rows, :cfg.cols]
    assert not res.acc[0].any()
    assert np.array_equal(res.acc[1:3], sp[1:3, :cfg.rows] @ w)
    assert np.array_equal(res.acc[3:5], sp[cfg.rows:cfg.rows + 2, :cfg.rows] @ w)
    assert res.array_macs == 4 * cfg.rows * cfg.cols


# ---- vector ---------------------------------------------------------------------------------

def vector_reference(mnemonic, acc, dst, src, rows, mult=0, shift=0, zp=0, relu=False):
    acc = acc.astype(np.int64)
    for i in range(rows):              # the semantics' sequential loop, literally
        s, d = acc[src + i].copy(), acc[dst + i]
        if mnemonic == "vadd":
            acc[dst + i] = (d + s + 2**31) % 2**32 - 2**31
        elif mnemonic == "vmax":
            acc[dst + i] = np.maximum(d, s)
        elif mnemonic == "vrelu":
            acc[dst + i] = np.maximum(s, 0)
        else:
            acc[dst + i] = requant(s, mult, shift, zp, relu)
    return acc.astype(np.int32)


@ALL
@pytest.mark.parametrize("mnemonic", ["vadd", "vmax", "vrelu", "vquant"])
@pytest.mark.parametrize("dst,src", [(20, 0), (0, 0), (2, 0), (0, 3), (5, 4)])   # overlaps included
def test_vector_ops(name, mnemonic, dst, src):
    cfg = CONFIGS[name]
    dram = random_dram(cfg, 7)
    dram[:4 * cfg.cols] = np.full(cfg.cols, 2**31 - 1, "<i4").view(np.uint8)    # vadd overflow wraps
    rows = 11
    extra = dict(qreg=4, shift=13, zp=-3, relu=True) if mnemonic == "vquant" else {}
    image = program(cfg, acc_from(cfg, 0, 40), op("seti", rd=4, imm=-1234567), FENCE,
                    op(mnemonic, dst=dst, src=src, rows=rows, **extra))
    res = run(image, dram, cfg)
    start = dram_rows(dram, 0, 40, 4 * cfg.cols, 4 * cfg.cols).copy().view("<i4")
    acc = np.zeros_like(res.acc)
    acc[:40] = start
    q = dict(mult=-1234567, shift=13, zp=-3, relu=True) if mnemonic == "vquant" else {}
    assert np.array_equal(res.acc, vector_reference(mnemonic, acc, dst, src, rows, **q))


def test_vquant_no_relu_saturates():
    cfg = CONFIGS["4x4"]
    values = np.array([[-(2**31), 2**31 - 1, 0, 1000], [-1000, 64, -65, 63]], "<i4")
    image = program(cfg, acc_from(cfg, 0, 2), op("seti", rd=1, imm=3), FENCE,
                    op("vquant", dst=0, src=0, rows=2, qreg=1, shift=2, zp=5))
    res = run(image, values.view(np.uint8).ravel(), cfg)
    assert res.acc[:2].tolist() == requant(values, 3, 2, 5).astype(np.int32).tolist()
    assert res.acc[0, :2].tolist() == [-128, 127]


# ---- stores ---------------------------------------------------------------------------------

@ALL
@pytest.mark.parametrize("stride_kind", ["gap", "dense", "overlap", "zero"])
def test_stores(name, stride_kind):
    cfg = CONFIGS[name]
    dram = random_dram(cfg, 8)
    rows, length = 9, cfg.cols - 1
    strides = {"gap": 4 * cfg.cols + 5, "dense": 4 * length, "overlap": 3, "zero": 0}
    s32 = strides[stride_kind]
    s8 = {"gap": cfg.cols + 2, "dense": length, "overlap": 1, "zero": 0}[stride_kind]
    out32, out8, outsp = 200_000, 300_000, 400_000
    image = program(cfg, acc_from(cfg, 0, rows),
                    op("load.sp", sp=10, dram=5000, rows=rows, len=cfg.spad_row_bytes, stride=7),
                    op("seti", rd=9, imm=0x7123), op("seti", rd=2, imm=out8 - 1), FENCE,
                    op("store.acc32", dram=out32, acc=0, rows=rows, len=length, stride=s32),
                    op("store.acc8", dram=(2, 1), acc=0, rows=rows, len=length, stride=s8,
                       qreg=9, shift=20, zp=-7, relu=True),
                    op("store.sp", dram=outsp, sp=10, rows=rows, len=length, stride=s8))
    res = run(image, dram, cfg)
    acc = dram_rows(dram, 0, rows, 4 * cfg.cols, 4 * cfg.cols).copy().view("<i4")[:, :length]
    sp = dram_rows(dram, 5000, rows, cfg.spad_row_bytes, 7)[:, :length]
    want = dram.copy()
    for i in range(rows):             # row after row: with overlapping rows the later one wins
        want[out32 + i * s32:out32 + i * s32 + 4 * length] = acc[i].astype("<i4").view(np.uint8)
        want[out8 + i * s8:out8 + i * s8 + length] = requant(acc[i], 0x7123, 20, -7, True).view(np.uint8)
        want[outsp + i * s8:outsp + i * s8 + length] = sp[i]
    assert np.array_equal(res.dram, want)
    assert res.dram_write_bytes == rows * length * 6
    assert res.counts["store.acc8"] == 1


def test_store_rows0_and_len0_write_nothing():
    cfg = CONFIGS["8x8"]
    dram = random_dram(cfg, 9)
    image = program(cfg, op("load.acc8", acc=0, dram=0, rows=4, len=8, stride=8), FENCE,
                    op("store.acc32", dram=100, acc=0, rows=0, len=8, stride=32),
                    op("store.acc8", dram=100, acc=0, rows=4, len=0, stride=8, qreg=0),
                    op("store.sp", dram=0xFFFFFF, sp=0, rows=3, len=0, stride=0xFFFFFF))
    res = run(image, dram, cfg)
    assert np.array_equal(res.dram, dram) and res.dram_write_bytes == 0
