"""The reference simulator as a whole: scalar control, every error code at its exact index,
queues and tokens, images, determinism and speed."""

import time

import numpy as np
import pytest

from npuforge.assembler.builder import ProgramBuilder
from npuforge.config import load_config
from npuforge.isa.encoding import Instruction, encode, field_slice
from npuforge.isa.image import ImageError, ProgramImage
from npuforge.isa.refsim import RefResult, SimError, run
from npuforge.isa.spec import ErrorCode, Header, Opcode

CFG = load_config("4x4").replace(dram_mib=1)
CFG8 = load_config("8x8")


def build(cfg, *body, halt=True):
    """A ProgramBuilder from ``(mnemonic, operands)`` pairs and label names."""
    b = ProgramBuilder(cfg)
    for item in body:
        if isinstance(item, str):
            b.label(item)
        else:
            b.emit(item[0], **item[1])
    if halt:
        b.emit("halt")
    return b


def op(mnemonic, **operands):
    return mnemonic, operands


def word(mnemonic, **operands):
    return build(CFG, op(mnemonic, **operands), halt=False).words()[0]


def sim_error(cfg, program, dram=b"", **kw) -> SimError:
    with pytest.raises(SimError) as info:
        run(program, dram, cfg, **kw)
    return info.value


# ---- scalar control -------------------------------------------------------------------------

def test_seti_addi_dbnz_loop_and_r0():
    b = build(CFG, op("seti", rd=1, imm=5), op("seti", rd=2, imm=-1), op("seti", rd=0, imm=99),
              op("addi", rd=0, rs=2, imm=3), op("addi", rd=3, rs=2, imm=2),        # wraps to 1
              op("seti", rd=4, imm=0x7FFFFFFF), op("addi", rd=4, rs=4, imm=1),
              "loop", op("addi", rd=5, rs=5, imm=3), op("dbnz", rd=1, target="loop"),
              op("dbnz", rd=0, target="loop"))                                      # r0 never branches
    res = run(b.image(), b"", CFG)
    assert res.regs[:6] == [0, 0, 0xFFFFFFFF, 1, 0x80000000, 15]
    assert res.counts["dbnz"] == 6 and res.counts["addi"] == 3 + 5 and res.counts["halt"] == 1
    assert res.dispatched == 7 + 5 * 2 + 1 + 1
    assert all(0 <= r < 2**32 for r in res.regs)


def test_registers_resolve_at_dispatch_in_program_order():
    # The loads are still queued when r1 changes; each uses the value it was dispatched with.
    dram = np.arange(64, dtype=np.uint8)
    b = build(CFG, op("seti", rd=1, imm=8), op("load.sp", sp=(1, 0), dram=(1, 0), rows=1, len=4, stride=0),
              op("seti", rd=1, imm=20), op("load.sp", sp=(1, 0), dram=(1, 0), rows=1, len=4, stride=0))
    res = run(b.image(), dram, CFG)
    assert res.spad[8].tolist() == [8, 9, 10, 11] and res.spad[20].tolist() == [20, 21, 22, 23]


def test_address_arithmetic_wraps_modulo_2_32():
    b = build(CFG, op("seti", rd=1, imm=-3), op("load.sp", sp=(1, 5), dram=(1, 4), rows=1, len=4, stride=0))
    res = run(b.image(), np.arange(16, dtype=np.uint8), CFG)
    assert res.spad[2].tolist() == [1, 2, 3, 4]


# ---- errors, each at its exact index ----------------------------------------------------------

def test_unknown_opcode():
    bad = encode(Instruction(Opcode.NOP)) & ~field_slice(Header, "op").mask | field_slice(Header, "op").put(7)
    err = sim_error(CFG, [word("nop"), word("nop"), bad, word("halt")], source_lines=[3, 4, 9, 10])
    assert (err.code, err.pc, err.line) == (ErrorCode.ILLEGAL_INSTR, 2, 9)
    assert str(err) == f"instruction 2 (line 9): ILLEGAL_INSTR: word {bad:#034x}: unknown opcode 7"


def test_opcode_zero_past_the_end():
    err = sim_error(CFG, [word("seti", rd=1, imm=1), word("nop")])
    assert (err.code, err.pc, err.line) == (ErrorCode.ILLEGAL_INSTR, 2, None)
    assert str(err).startswith("instruction 2: ILLEGAL_INSTR: ") and "unknown opcode 0" in str(err)


def test_reserved_bit():
    err = sim_error(CFG, [word("nop"), word("halt") | 1 << 127])
    assert (err.code, err.pc) == (ErrorCode.ILLEGAL_INSTR, 1)
    assert "halt: reserved bits set" in err.message


@pytest.mark.parametrize("mnemonic,operands,flag", [
    ("load.sp", dict(sp=0, dram=0, rows=1, len=1, stride=0), "pop_prev"),
    ("store.sp", dict(sp=0, dram=0, rows=1, len=1, stride=0), "push_next"),
    ("nop", {}, "push_prev"),
])
def test_illegal_dependency_flag(mnemonic, operands, flag):
    bad = word(mnemonic, **operands) | field_slice(Header, flag).put(1)
    err = sim_error(CFG, [word("nop"), word("nop"), bad, word("halt")])
    assert (err.code, err.pc) == (ErrorCode.ILLEGAL_INSTR, 2)
    assert flag in err.message


ROWS, ACC, RB, COLS, DRAM = CFG.spad_rows, CFG.acc_rows, CFG.spad_row_bytes, CFG.cols, CFG.dram_bytes
ADDR_CASES = {
    "spad rows": op("load.sp", sp=ROWS - 3, dram=0, rows=4, len=1, stride=0),
    "acc rows": op("load.acc8", acc=ACC - 1, dram=0, rows=2, len=1, stride=0),
    "store acc rows": op("store.acc32", acc=ACC, dram=0, rows=1, len=1, stride=0),
    "store.sp rows": op("store.sp", sp=(1, ROWS - 1), dram=0, rows=1, len=1, stride=0),
    "len > spad_row_bytes": op("load.sp", sp=0, dram=0, rows=1, len=RB + 1, stride=0),
    "len > cols": op("store.acc8", acc=0, dram=0, rows=1, len=COLS + 1, stride=0, qreg=0),
    "len > cols acc32": op("load.acc32", acc=0, dram=0, rows=1, len=COLS + 1, stride=0),
    "dram end": op("load.acc32", acc=0, dram=DRAM - 4 * 2 * COLS, rows=2, len=COLS, stride=4 * COLS + 1),
    "dram end by stride": op("store.sp", sp=0, dram=0, rows=3, len=1, stride=DRAM // 2),
    "dram via register": op("load.sp", sp=0, dram=(2, 0), rows=1, len=1, stride=0),
    "preload": op("preload", sp=ROWS - CFG.rows + 1),
    "matmul sp": op("matmul", acc=0, sp=ROWS - 1, rows=2),
    "matmul acc": op("matmul", acc=ACC - 1, sp=0, rows=2),
    "vector src": op("vadd", dst=0, src=ACC - 5, rows=6),
    "vector dst": op("vquant", dst=ACC - 5, src=0, rows=6, qreg=1),
}


@pytest.mark.parametrize("case", list(ADDR_CASES))
def test_addr_range(case):
    body = [op("seti", rd=1, imm=1), op("seti", rd=2, imm=DRAM), op("nop"), ADDR_CASES[case]]
    err = sim_error(CFG, build(CFG, *body).image())
    assert (err.code, err.pc) == (ErrorCode.ADDR_RANGE, 3)
    assert err.message.startswith(ADDR_CASES[case][0] + ": ")


def test_addr_range_message_and_edges_that_fit():
    err = sim_error(CFG, build(CFG, ADDR_CASES["spad rows"]).image())
    assert str(err) == (f"instruction 0: ADDR_RANGE: load.sp: sp: scratchpad rows [{ROWS - 3}, {ROWS + 1}) "
                        f"are outside [0, {ROWS}) (spad_rows={ROWS})")
    err = sim_error(CFG, build(CFG, ADDR_CASES["dram end"]).image())
    assert "row 1 ends at byte" in err.message and f"past dram_bytes={DRAM}" in err.message
    # The same shapes one step inside the memories run; rows=0 touches nothing at all.
    fits = build(CFG, op("load.sp", sp=ROWS - 4, dram=DRAM - RB, rows=4, len=RB, stride=0),
                 op("load.acc32", acc=ACC - 2, dram=DRAM - 4 * COLS - 4 * COLS, rows=2, len=COLS, stride=4 * COLS),
                 op("preload", sp=ROWS - CFG.rows),
                 op("matmul", acc=ACC - 1, sp=ROWS - 1, rows=1),
                 op("vadd", dst=0xFFFF, src=0xFFFF, rows=0),
                 op("store.sp", sp=0xFFFF, dram=0xFFFFFF, rows=0, len=RB, stride=0xFFFFFF))
    assert run(fits.image(), b"", CFG).counts["vadd"] == 1


def test_pc_range_from_dbnz_and_fetch():
    cfg = CFG.replace(imem_words=16)
    err = sim_error(cfg, [word("seti", rd=1, imm=2), word("dbnz", rd=1, target=16), word("halt")])
    assert (err.code, err.pc) == (ErrorCode.PC_RANGE, 1)
    err = sim_error(cfg, [word("seti", rd=1, imm=2), word("dbnz", rd=1, target=-1), word("halt")])
    assert (err.code, err.pc) == (ErrorCode.PC_RANGE, 1)
    # Not taken (r1 reaches 0): the bad target is never used.
    assert run([word("seti", rd=1, imm=1), word("dbnz", rd=1, target=99), word("halt")], b"", cfg).dispatched == 3
    err = sim_error(cfg, [word("nop")] * 16)        # falls off the end of a full instruction memory
    assert (err.code, err.pc) == (ErrorCode.PC_RANGE, 16)


def test_check_order_pc_then_illegal_then_addr():
    # A word with both a reserved bit and a bad address is ILLEGAL_INSTR, not ADDR_RANGE.
    bad = word("load.sp", sp=ROWS, dram=0, rows=1, len=1, stride=0) | 1 << 126
    assert sim_error(CFG, [bad]).code == ErrorCode.ILLEGAL_INSTR


def test_step_limit():
    b = build(CFG, op("nop"), "loop", op("seti", rd=2, imm=2), op("dbnz", rd=2, target="loop"))
    err = sim_error(CFG, b.image(), step_limit=10)
    assert (err.code, err.pc) == (ErrorCode.STEP_LIMIT, 2)      # pcs 0,1,2,1,2,1,2,1,2,1 dispatched
    assert "step_limit" in err.message
    ok = build(CFG, op("nop"), op("nop"))
    assert run(ok.image(), b"", CFG, step_limit=3).dispatched == 3
    assert sim_error(CFG, ok.image(), step_limit=2).pc == 2


# ---- tokens, queues and deadlock --------------------------------------------------------------

NOOP_LOAD = dict(sp=0, dram=0, rows=0, len=0, stride=0)


def test_deadlock_missing_token():
    b = build(CFG, op("load.sp", **NOOP_LOAD), op("nop"), op("vadd", dst=0, src=0, rows=0, deps=["pop_prev"]),
              op("load.sp", **NOOP_LOAD))
    err = sim_error(CFG, b.image())
    assert (err.code, err.pc) == (ErrorCode.DEADLOCK, 2)
    assert "compute unit at instruction 2 (vadd) waits to pop L2C" in err.message


def test_deadlock_on_fence_counts_the_fence():
    b = build(CFG, op("nop"), op("fence"), op("store.sp", **NOOP_LOAD, deps=["pop_prev"]), op("fence"))
    err = sim_error(CFG, b.image())
    assert (err.code, err.pc) == (ErrorCode.DEADLOCK, 2)   # the store (2) is below the fence (3)
    # In a loop the fence (1) can be below the store it waits for (2).
    b = build(CFG, op("seti", rd=1, imm=2), "loop", op("fence"), op("store.sp", **NOOP_LOAD, deps=["pop_prev"]),
              op("dbnz", rd=1, target="loop"))
    err = sim_error(CFG, b.image())
    assert (err.code, err.pc) == (ErrorCode.DEADLOCK, 1)
    assert "dispatcher waits on the fence at instruction 1" in err.message


def store_waiting(n, cfg):
    """n stores that each wait for a C2S token, then the compute instruction that gives them."""
    body = [op("store.sp", **NOOP_LOAD, deps=["pop_prev"]) for _ in range(n)]
    body += [op("vadd", dst=0, src=0, rows=0, deps=["push_next"]) for _ in range(n)]
    return build(cfg, *body).image()


def test_full_queue_deadlock_and_queue_slot_rule():
    cfg = CFG.replace(queue_depth=2)
    # The store unit holds one waiting store outside its queue, the queue holds two more.
    assert run(store_waiting(3, cfg), b"", cfg).counts["store.sp"] == 3
    err = sim_error(cfg, store_waiting(4, cfg))
    assert (err.code, err.pc) == (ErrorCode.DEADLOCK, 0)
    assert "dispatcher waits on the full store queue at instruction 3" in err.message


def test_full_queue_deadlock_reports_dispatcher_pc_when_smallest():
    cfg = CFG.replace(queue_depth=2)
    b = build(cfg, op("seti", rd=1, imm=5), "loop",
              op("store.sp", **NOOP_LOAD),                                  # 1: runs
              op("store.sp", **NOOP_LOAD, deps=["pop_prev"]),               # 2: waits forever
              op("dbnz", rd=1, target="loop"))
    err = sim_error(cfg, b.image())
    assert (err.code, err.pc) == (ErrorCode.DEADLOCK, 1)


def test_token_depth_blocks_without_deadlock():
    cfg = CFG.replace(token_depth=1)
    dram = np.arange(64, dtype=np.uint8)
    body = [op("load.acc8", acc=i, dram=4 * i, rows=1, len=4, stride=0, deps=["push_next"]) for i in range(5)]
    body += [op("vadd", dst=10, src=i, rows=1, deps=["pop_prev"]) for i in range(5)]
    res = run(build(cfg, *body).image(), dram, cfg)
    assert res.acc[10].tolist() == dram[:20].reshape(5, 4).astype(np.int32).sum(0).tolist()


def test_token_overflow_with_no_consumer_is_deadlock():
    cfg = CFG.replace(token_depth=1)
    b = build(cfg, op("load.sp", **NOOP_LOAD, deps=["push_next"]), op("nop"),
              op("load.sp", **NOOP_LOAD, deps=["push_next"]))
    err = sim_error(cfg, b.image())
    assert (err.code, err.pc) == (ErrorCode.DEADLOCK, 2)           # at halt the dispatcher does not count
    assert "waits to push L2C" in err.message and "dispatcher has halted" in err.message


def test_pops_and_pushes_are_all_at_once():
    # The vadd pops L2C and S2C; only L2C ever comes. Pops are not taken one by one, so with
    # token_depth=1 the second load keeps waiting to push and is the smallest waiting instruction.
    cfg = CFG.replace(token_depth=1)
    b = build(cfg, op("load.sp", **NOOP_LOAD, deps=["push_next"]), op("load.sp", **NOOP_LOAD, deps=["push_next"]),
              op("nop"), op("vadd", dst=0, src=0, rows=0, deps=["pop_prev", "pop_next"]))
    err = sim_error(cfg, b.image())
    assert (err.code, err.pc) == (ErrorCode.DEADLOCK, 1)
    assert "load unit at instruction 1 (load.sp) waits to push L2C" in err.message
    assert "compute unit at instruction 3 (vadd) waits to pop L2C, S2C" in err.message


# ---- images, inputs, determinism ----------------------------------------------------------------

def test_image_for_another_config_is_refused():
    image = build(CFG, op("nop")).image()
    with pytest.raises(ImageError, match="image was made for config hash .* but config '.*' has hash"):
        run(image, b"", CFG.replace(queue_depth=3))
    too_long = ProgramImage(tuple([word("nop")] * 17), CFG.replace(imem_words=16).hash)
    with pytest.raises(ImageError, match="do not fit the instruction memory"):
        run(too_long, b"", CFG.replace(imem_words=16))


def test_bad_inputs():
    with pytest.raises(ValueError, match="more than dram_bytes"):
        run([word("halt")], bytes(CFG.dram_bytes + 1), CFG)
    with pytest.raises(ValueError, match="1-D uint8"):
        run([word("halt")], np.zeros(4, np.int32), CFG)
    with pytest.raises(ValueError, match="instruction 1: word .* is not a 128-bit value"):
        run([word("nop"), 1 << 128], b"", CFG)


def test_deterministic_and_callers_dram_untouched():
    cfg = CFG8.replace(dram_mib=1)
    a = np.random.default_rng(11).integers(0, 256, 70_000, dtype=np.uint8)
    keep = a.copy()
    image = gemm_image(cfg, 32, 16, 24, 0, 20_000, 40_000)
    r1, r2 = run(image, a, cfg), run(image, a.tobytes(), cfg)
    assert np.array_equal(a, keep)
    assert r1.dram.tobytes() == r2.dram.tobytes() and r1.dram.size == cfg.dram_bytes
    assert r1.acc.tobytes() == r2.acc.tobytes() and r1.spad.tobytes() == r2.spad.tobytes()
    assert isinstance(r1, RefResult) and r1.dram.dtype == np.uint8 and r1.acc.dtype == np.int32
    assert r1.spad.shape == (cfg.spad_rows, cfg.spad_row_bytes) and r1.acc.shape == (cfg.acc_rows, cfg.cols)


# ---- a pipelined GEMM: tokens, loops, double buffering, speed -----------------------------------

def gemm_builder(cfg, m, k, n, a_addr, b_addr, c_addr):
    """C (int32, m x n) = A (int8, m x k) @ B (int8, k x n), all row-major; k, n multiples of the array.

    All of A and B go to the scratchpad (A as k/rows column blocks, B as tiles); the output
    alternates between two accumulator buffers, guarded by C2S / S2C tokens.
    """
    r, c = cfg.rows, cfg.cols
    kt, nt = k // r, n // c
    b_base = kt * m
    body = [op("seti", rd=1, imm=0), op("seti", rd=2, imm=a_addr), op("seti", rd=3, imm=kt), "la",
            op("load.sp", sp=(1, 0), dram=(2, 0), rows=m, len=r, stride=k),
            op("addi", rd=1, rs=1, imm=m), op("addi", rd=2, rs=2, imm=r), op("dbnz", rd=3, target="la"),
            op("seti", rd=1, imm=b_base), op("seti", rd=2, imm=b_addr), op("seti", rd=3, imm=kt), "lbk",
            op("seti", rd=4, imm=nt), "lb",
            op("load.sp", sp=(1, 0), dram=(2, 0), rows=r, len=c, stride=n),
            op("addi", rd=1, rs=1, imm=r), op("addi", rd=2, rs=2, imm=c), op("dbnz", rd=4, target="lb"),
            op("addi", rd=2, rs=2, imm=(r - 1) * n), op("dbnz", rd=3, target="lbk"),
            op("load.sp", **NOOP_LOAD, deps=["push_next"]),
            op("vadd", dst=0, src=0, rows=0, deps=["pop_prev"]),
            op("store.acc32", dram=0, acc=0, rows=0, len=0, stride=0, deps=["push_prev"]),
            op("store.acc32", dram=0, acc=0, rows=0, len=0, stride=0, deps=["push_prev"]),
            op("seti", rd=5, imm=nt), op("seti", rd=6, imm=0), op("seti", rd=12, imm=m),
            op("seti", rd=7, imm=b_base), op("seti", rd=8, imm=c_addr), "nl",
            op("preload", sp=(7, 0)), op("matmul", acc=(6, 0), sp=0, rows=m, deps=["pop_next"])]
    if kt > 1:
        body += [op("seti", rd=9, imm=kt - 1), op("addi", rd=10, rs=7, imm=nt * r), op("seti", rd=11, imm=m),
                 "kl", op("preload", sp=(10, 0)), op("matmul", acc=(6, 0), sp=(11, 0), rows=m, accumulate=True),
                 op("addi", rd=10, rs=10, imm=nt * r), op("addi", rd=11, rs=11, imm=m),
                 op("dbnz", rd=9, target="kl")]
    body += [op("vadd", dst=0, src=0, rows=0, deps=["push_next"]),
             op("store.acc32", dram=(8, 0), acc=(6, 0), rows=m, len=c, stride=4 * n, deps=["pop_prev", "push_prev"]),
             op("addi", rd=7, rs=7, imm=r), op("addi", rd=8, rs=8, imm=4 * c),
             op("addi", rd=13, rs=6, imm=0), op("addi", rd=6, rs=12, imm=0), op("addi", rd=12, rs=13, imm=0),
             op("dbnz", rd=5, target="nl"),
             # Take back the two S2C tokens the store unit gave up front, so that the run can end.
             op("vadd", dst=0, src=0, rows=0, deps=["pop_next"]), op("vadd", dst=0, src=0, rows=0, deps=["pop_next"])]
    return build(cfg, *body)


def gemm_image(cfg, m, k, n, a_addr, b_addr, c_addr):
    return gemm_builder(cfg, m, k, n, a_addr, b_addr, c_addr).image()


def gemm_case(cfg, m, k, n, seed):
    rng = np.random.default_rng(seed)
    a = rng.integers(-128, 128, (m, k), dtype=np.int8)
    b = rng.integers(-128, 128, (k, n), dtype=np.int8)
    dram = np.zeros(3 * 2**20, np.uint8)
    dram[:m * k] = a.view(np.uint8).ravel()
    dram[2**20:2**20 + k * n] = b.view(np.uint8).ravel()
    return dram, a.astype(np.int32) @ b.astype(np.int32)


@pytest.mark.parametrize("name", ["4x4", "8x8", "16x16"])
@pytest.mark.parametrize("queue_depth,token_depth", [(16, 8), (1, 2), (2, 1)])
def test_gemm_result_independent_of_queue_and_token_depth(name, queue_depth, token_depth):
    cfg = load_config(name).replace(queue_depth=queue_depth, token_depth=token_depth)
    m, k, n = 24, 2 * cfg.rows, 3 * cfg.cols
    dram, want = gemm_case(cfg, m, k, n, seed=queue_depth)
    res = run(gemm_image(cfg, m, k, n, 0, 2**20, 2**21), dram, cfg)
    assert np.array_equal(res.dram[2**21:2**21 + 4 * m * n].view("<i4").reshape(m, n), want)
    assert res.array_macs == m * k * n and res.dram_write_bytes == 4 * m * n


def test_gemm_256_speed():
    m = k = n = 256
    dram, want = gemm_case(CFG8, m, k, n, seed=0)
    image = gemm_image(CFG8, m, k, n, 0, 2**20, 2**21)
    t = time.perf_counter()
    res = run(image, dram, CFG8)
    wall = time.perf_counter() - t
    assert np.array_equal(res.dram[2**21:2**21 + 4 * m * n].view("<i4").reshape(m, n), want)
    assert res.counts["matmul"] == 1024 and res.counts["preload"] == 1024
    assert wall < 5.0, f"256x256x256 matmul took {wall:.2f} s on the reference simulator"


@pytest.mark.parametrize("token_depth", [8, 1])
def test_pipelined_gemm_is_race_free(token_depth):
    cfg = CFG8.replace(token_depth=token_depth)
    m, k, n = 40, 24, 32
    dram, want = gemm_case(cfg, m, k, n, seed=5)
    res = run(gemm_image(cfg, m, k, n, 0, 2**20, 2**21), dram, cfg, check_races=True)
    assert np.array_equal(res.dram[2**21:2**21 + 4 * m * n].view("<i4").reshape(m, n), want)
