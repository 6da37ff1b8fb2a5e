"""Dispatcher against the reference simulator's dispatcher: resolved queue entries, order, errors."""

import numpy as np
import pytest
from amaranth.sim import Simulator

from npuforge.config import load_config
from npuforge.hw.dispatch import Dispatcher, dma_element_bytes
from npuforge.hw.soc.multiport import OnFpga
from npuforge.hw.tokens import channel_index
from npuforge.isa.encoding import Instruction, encode, field_slice
from npuforge.isa.refsim import SimError, _Sim
from npuforge.isa.refsim_units import Machine
from npuforge.isa.spec import BY_OPCODE, LEGAL_DEPS, ErrorCode, Header, Opcode, Queue, ScalarFmt

CFG = load_config("4x4").replace(queue_depth=4, imem_words=64)
CFG2 = CFG.replace(dispatch_stages=2)       # a queue instruction resolved in its first cycle, checked in its second
QUEUE_OPS = [op for op in Opcode if BY_OPCODE[op].queue != Queue.SCALAR]


def random_queue_instr(rng, cfg, legal=True):
    """A random queue instruction whose addresses are mostly (or, with legal, all) in range."""
    op = QUEUE_OPS[rng.integers(len(QUEUE_OPS))]
    spec = BY_OPCODE[op]
    args = {}
    rows = int(rng.integers(0, 5))
    for o in spec.operands:
        if o.kind == "mem":
            reg = int(rng.integers(0, 4))
            off = int(rng.integers(0, 8)) if legal else int(rng.choice([0, 5, cfg.acc_rows - 2, cfg.spad_rows - 1]))
            args[o.name] = (reg, off)
        elif o.kind == "dram":
            args[o.name] = (int(rng.integers(0, 4)), int(rng.integers(0, 4096)) if legal
                            else int(rng.choice([0, cfg.dram_bytes - 20, (1 << 24) - 1])))
        elif o.name == "rows":
            args[o.name] = rows
        elif o.name == "len":
            limit = cfg.spad_row_bytes if "sp" in args or op == Opcode.LOAD_SP else cfg.cols
            args[o.name] = int(rng.integers(0, limit + (1 if legal else 3)))
        elif o.name == "stride":
            args[o.name] = int(rng.integers(0, 300))
        elif o.kind == "reg":
            args[o.name] = int(rng.integers(0, 16))
        elif o.kind == "flag":
            args[o.name] = int(rng.integers(0, 2))
        elif o.name == "shift":
            args[o.name] = int(rng.integers(0, 64))
        elif o.name == "zp":
            args[o.name] = int(rng.integers(-128, 128))
    flags = [f for f, ch in LEGAL_DEPS[spec.queue].items() if ch is not None and rng.random() < 0.3]
    return encode(Instruction(op, args, frozenset(flags)))


def random_program(rng, cfg, n, p_bad=0.0):
    """n instructions: register writes, queue instructions, nops, fences, forward branches, halt."""
    words = []
    while len(words) < n - 1:
        r = rng.random()
        pc = len(words)
        if r < 0.2:
            rd = int(rng.integers(0, 16))
            imm = int(rng.choice([rng.integers(0, 64), rng.integers(-(1 << 31), 1 << 31)]))
            words.append(encode(Instruction(Opcode.SETI, {"rd": rd, "imm": imm})))
        elif r < 0.25:
            words.append(encode(Instruction(Opcode.ADDI, {"rd": int(rng.integers(1, 16)),
                                                          "rs": int(rng.integers(0, 16)),
                                                          "imm": int(rng.integers(-3, 10))})))
        elif r < 0.3:
            words.append(encode(Instruction(Opcode.DBNZ, {"rd": int(rng.integers(0, 16)),
                                                          "target": pc + int(rng.integers(1, 3))})))
        elif r < 0.33:
            words.append(encode(Instruction(rng.choice([Opcode.NOP, Opcode.FENCE]))))
        elif r < 0.33 + p_bad:
            choice = rng.integers(4)
            if choice == 0:
                words.append(int(rng.integers(0, 1 << 62)) << 66 | int(rng.integers(0, 1 << 62)))
            elif choice == 1:
                words.append(random_queue_instr(rng, cfg) | 1 << 127)
            elif choice == 2:
                words.append(random_queue_instr(rng, cfg, legal=False))
            else:
                # A negative target cannot be assembled, but a word can hold one.
                target = int(rng.choice([-1, 5000]))
                words.append(encode(Instruction(Opcode.DBNZ, {"rd": 1, "target": 0}))
                             | field_slice(ScalarFmt, "imm").put(target))
        else:
            words.append(random_queue_instr(rng, cfg))
    words.append(encode(Instruction(Opcode.HALT)))
    return words


def reference_dispatch(words, cfg):
    """The refsim's dispatcher alone (queues never drain): (entries per queue, error or None)."""
    big = cfg.replace(queue_depth=256)
    sim = _Sim(tuple(words), Machine(big, np.zeros(big.dram_bytes, np.uint8)), big, 10_000, None, None)
    out = [[], [], []]
    err = None
    try:
        while True:
            sim.dispatch()
            for u, q in enumerate(sim.queues):       # the units drain at a fence
                out[u] += q
                q.clear()
            if sim.halted:
                break
    except SimError as e:
        err = (e.code, e.pc)
    for u, q in enumerate(sim.queues):
        out[u] += q
    return out, err


async def _load_program(ctx, dut, words):
    """Write ``words`` into the dispatcher's instruction memory through its host port."""
    for i, w in enumerate(words):
        ctx.set(dut.imem_we, 1)
        ctx.set(dut.imem_addr, i)
        ctx.set(dut.imem_data, w)
        await ctx.tick()
    ctx.set(dut.imem_we, 0)


def rtl_dispatch(words, cfg, seed, max_cycles=2000, fpga=False):
    """Run the Dispatcher with random queue back-pressure; (entries per queue, error or None, cycles).

    ``fpga``: elaborated as for a board (the DRAM range check's room predecoded at the write)."""
    dut = Dispatcher(cfg)
    rng = np.random.default_rng(seed)
    got = [[], [], []]
    out = {}

    async def tb(ctx):
        await _load_program(ctx, dut, words)
        ctx.set(dut.start, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)
        ports = [(dut.load_valid, dut.load_ready, dut.load_data),
                 (dut.compute_valid, dut.compute_ready, dut.compute_data),
                 (dut.store_valid, dut.store_ready, dut.store_data)]
        for cycle in range(max_cycles):
            readies = [int(rng.random() < 0.7) for _ in ports]
            for (_, ready, _), r in zip(ports, readies):
                ctx.set(ready, r)
            ctx.set(dut.all_idle, int(rng.random() < 0.5))
            for u, (valid, ready, data) in enumerate(ports):
                if ctx.get(valid) and readies[u]:
                    got[u].append(ctx.get(data))
            if ctx.get(dut.error):
                out["error"] = (ErrorCode(ctx.get(dut.error_code)), ctx.get(dut.error_pc))
                out["cycles"] = cycle
                return
            if ctx.get(dut.halted):
                out["cycles"] = cycle
                return
            await ctx.tick()
        raise AssertionError("dispatcher neither halted nor stopped")

    sim = Simulator(OnFpga(dut) if fpga else dut)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
    return got, out.get("error"), out["cycles"]


def check_entry(entry, cmd, cfg):
    assert entry.pc == cmd.pc
    op = Opcode(cmd.op)
    assert entry.cmd.op == op, (cmd, entry.cmd.op)
    c = entry.cmd
    mask16 = 0xFFFF
    if BY_OPCODE[op].fmt == "dma":
        fields = dict(mem=(c.mem, cmd.mem & mask16), dram=(c.dram, cmd.dram), rows=(c.rows, cmd.rows),
                      len=(c.len, cmd.len), stride=(c.stride, cmd.stride))
    else:
        fields = dict(src=(c.src, cmd.src & mask16), dst=(c.dst, cmd.dst & mask16), rows=(c.rows, cmd.rows),
                      accumulate=(c.accumulate, cmd.accumulate))
    fields.update(mult=(c.mult & 0xFFFFFFFF, cmd.mult & 0xFFFFFFFF), shift=(c.shift, cmd.shift),
                  zp=(c.zp, cmd.zp), relu=(c.relu, cmd.relu))
    for name, (rtl, ref) in fields.items():
        assert rtl == ref, f"pc {cmd.pc} {BY_OPCODE[op].mnemonic}: {name}: rtl {rtl}, reference {ref}"
    legal = LEGAL_DEPS[BY_OPCODE[op].queue]
    pops = {channel_index(legal[f]) for f in ("pop_prev", "pop_next") if getattr(entry.deps, f)}
    pushes = {channel_index(legal[f]) for f in ("push_prev", "push_next") if getattr(entry.deps, f)}
    assert pops == set(cmd.pops) and pushes == set(cmd.pushes)


def compare(words, cfg, seed, fpga=False):
    ref, ref_err = reference_dispatch(words, cfg)
    got, err, cycles = rtl_dispatch(words, cfg, seed, fpga=fpga)
    assert err == ref_err
    for u in range(3):
        assert len(got[u]) == len(ref[u]), (u, len(got[u]), len(ref[u]))
        for entry, cmd in zip(got[u], ref[u]):
            check_entry(entry, cmd, cfg)
    return cycles


def test_element_bytes_table():
    assert dma_element_bytes(Opcode.LOAD_ACC32) == 4 and dma_element_bytes(Opcode.STORE_SP) == 1


def test_straight_line_one_per_cycle():
    """With queues always ready, n instructions take n cycles (taken branches included)."""
    words = [encode(Instruction(Opcode.SETI, {"rd": 1, "imm": 3})),
             encode(Instruction(Opcode.NOP)),
             encode(Instruction(Opcode.DBNZ, {"rd": 1, "target": 1})),   # taken twice
             encode(Instruction(Opcode.HALT))]
    left = _trace(words, CFG)[0]
    assert left == list(enumerate([0, 1, 2, 1, 2, 1, 2, 3], 1))


def test_dbnz_r0_never_branches():
    words = [encode(Instruction(Opcode.DBNZ, {"rd": 0, "target": 5000 % 64})),
             encode(Instruction(Opcode.LOAD_SP, {"sp": (0, 1), "dram": (0, 0), "rows": 1, "len": 1, "stride": 0})),
             encode(Instruction(Opcode.HALT))]
    got, err, _ = rtl_dispatch(words, CFG, 0)
    assert err is None and len(got[0]) == 1


def _set(rd, value):
    return encode(Instruction(Opcode.SETI, {"rd": rd, "imm": value - (1 << 32) if value >= 1 << 31 else value}))


def _addi(rd, rs, imm):
    return encode(Instruction(Opcode.ADDI, {"rd": rd, "rs": rs, "imm": imm}))


@pytest.mark.parametrize("name,writes,taken", [
    ("seti 1", [_set(3, 1)], False),
    ("seti 2", [_set(3, 2)], True),
    ("seti 2**32 - 1", [_set(3, (1 << 32) - 1)], True),
    ("seti 2**16 + 1", [_set(3, (1 << 16) + 1)], True),          # 1 in the low half only
    ("seti 2**31 + 1", [_set(3, (1 << 31) + 1)], True),
    ("addi to 1", [_set(2, 5), _addi(3, 2, -4)], False),
    ("addi from r0", [_addi(3, 0, 1)], False),
    ("addi wraps to 1", [_set(2, (1 << 32) - 1), _addi(3, 2, 2)], False),
    ("addi to 0", [_set(2, 5), _addi(3, 2, -5)], True),
    ("addi in place to 1", [_set(3, 3), _addi(3, 3, -2)], False),
    ("addi from 1 to 2", [_set(3, 1), _addi(3, 3, 1)], True),
    ("dbnz 3 -> 2", [_set(3, 3), encode(Instruction(Opcode.DBNZ, {"rd": 3, "target": 2}))], True),
    ("dbnz 2 -> 1", [_set(3, 2), encode(Instruction(Opcode.DBNZ, {"rd": 3, "target": 2}))], False),
    ("start clears", [], True),
])
def test_dbnz_sees_every_write(name, writes, taken):
    # dbnz branches on r != 1: after every way of writing a register, in both forms.
    load = encode(Instruction(Opcode.LOAD_SP, {"sp": (0, 1), "dram": (0, 0), "rows": 1, "len": 1, "stride": 0}))
    words = writes + [encode(Instruction(Opcode.DBNZ, {"rd": 3, "target": len(writes) + 2})), load,
                      encode(Instruction(Opcode.HALT))]
    ref, ref_err = reference_dispatch(words, CFG)
    assert ref_err is None and len(ref[0]) == (0 if taken else 1)
    compare(words, CFG, 0)
    compare(words, CFG, 0, fpga=True)


@pytest.mark.parametrize("cfg", [CFG, CFG2], ids=["d1", "d2"])
@pytest.mark.parametrize("seed", range(6))
def test_random_legal_programs(seed, cfg):
    rng = np.random.default_rng(seed)
    compare(random_program(rng, cfg, 40), cfg, seed)


@pytest.mark.parametrize("cfg", [CFG, CFG2], ids=["d1", "d2"])
@pytest.mark.parametrize("seed", range(10))
def test_random_programs_with_errors(seed, cfg):
    rng = np.random.default_rng(100 + seed)
    compare(random_program(rng, cfg, 30, p_bad=0.08), cfg, seed)


@pytest.mark.parametrize("cfg", [CFG, CFG2], ids=["d1", "d2"])
@pytest.mark.parametrize("seed", range(8))
def test_fpga_predecode_matches_reference(seed, cfg):
    # The board form: the same entries, errors and cycles as the reference and as the plain form.
    rng = np.random.default_rng(300 + seed)
    words = random_program(rng, cfg, 40, p_bad=0.1)
    assert compare(words, cfg, seed, fpga=True) == compare(words, cfg, seed)


def _trace(words, cfg, ready=1):
    """Run ``words`` with every queue ready (or none, ``ready=0``): the (cycle, pc) of each instruction
    that leaves decode, the cycles that wait on a full queue, and the (cycle, code, pc) of an error."""
    dut = Dispatcher(cfg)
    left, stalls, errors = [], [], []

    async def tb(ctx):
        await _load_program(ctx, dut, words)
        for port in (dut.load_ready, dut.compute_ready, dut.store_ready):
            ctx.set(port, ready)
        ctx.set(dut.all_idle, 1)
        ctx.set(dut.start, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)
        for cycle in range(1, 30):
            if ctx.get(dut.dispatched):
                left.append((cycle, ctx.get(dut.pc)))
            if ctx.get(dut.full_stall):
                stalls.append(cycle)
            if ctx.get(dut.error):
                errors.append((cycle, ErrorCode(ctx.get(dut.error_code)), ctx.get(dut.error_pc)))
                return
            if ctx.get(dut.halted):
                return
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
    return left, stalls, errors


def test_two_stage_dispatch_timing():
    # dispatch_stages: 2 gives every queue instruction one more cycle in decode (docs/timing.md section 2):
    # the scalars around it keep one cycle each, and an ADDR_RANGE error is one cycle later.
    load = encode(Instruction(Opcode.LOAD_SP, {"sp": (0, 1), "dram": (0, 0), "rows": 1, "len": 1, "stride": 0}))
    words = [_set(1, 2), load, encode(Instruction(Opcode.NOP)), load, encode(Instruction(Opcode.HALT))]
    assert _trace(words, CFG)[0] == [(1, 0), (2, 1), (3, 2), (4, 3), (5, 4)]
    assert _trace(words, CFG2)[0] == [(1, 0), (3, 1), (4, 2), (6, 3), (7, 4)]
    # A full queue: waits from the second cycle on, never in the cycle that resolves the instruction.
    assert _trace(words, CFG, ready=0)[1][:2] == [2, 3]
    assert _trace(words, CFG2, ready=0)[1][:2] == [3, 4]
    bad = encode(Instruction(Opcode.LOAD_SP, {"sp": (0, CFG.spad_rows), "dram": (0, 0), "rows": 1, "len": 1,
                                              "stride": 0}))
    words = [_set(1, 2), bad, encode(Instruction(Opcode.HALT))]
    assert _trace(words, CFG)[2] == [(2, ErrorCode.ADDR_RANGE, 1)]
    assert _trace(words, CFG2)[2] == [(3, ErrorCode.ADDR_RANGE, 1)]
    # An illegal word is still reported in its first cycle.
    words = [_set(1, 2), load | 1 << 127, encode(Instruction(Opcode.HALT))]
    assert _trace(words, CFG2)[2] == [(2, ErrorCode.ILLEGAL_INSTR, 1)]


def _wrap_cases():
    """pytest.param(words, error expected, id=name): addresses whose register + offset wraps past 2**32,
    or nearly."""
    top = 1 << 32

    def prog(r1, instr):
        return [_set(1, r1), encode(instr), encode(Instruction(Opcode.HALT))]

    def load(sp, dram, rows=2, length=4, stride=16):
        return Instruction(Opcode.LOAD_SP, {"sp": sp, "dram": dram, "rows": rows, "len": length, "stride": stride})

    last_sp = CFG.spad_rows - 2                 # the last first row of a 2-row transfer
    last_byte = CFG.dram_bytes - 16 - 4        # the last DRAM address of a 2-row, 4-byte, stride-16 transfer
    yield pytest.param(prog(top - 4, load((1, 6), (0, 0))), False, id="sp wraps into range")
    yield pytest.param(prog(top - 4, load((1, 4 + last_sp), (0, 0))), False, id="sp wraps to the last row")
    yield pytest.param(prog(top - 4, load((1, 5 + last_sp), (0, 0))), True, id="sp wraps one row past")
    yield pytest.param(prog(top - 4, load((1, 3), (0, 0))), True, id="sp just short of the wrap")
    yield pytest.param(prog(top - 8, load((0, 0), (1, 16))), False, id="dram wraps into range")
    yield pytest.param(prog(top - 8, load((0, 0), (1, 8 + last_byte))), False, id="dram wraps to the last byte")
    yield pytest.param(prog(top - 8, load((0, 0), (1, 9 + last_byte))), True, id="dram wraps one byte past")
    yield pytest.param(prog(top - 1, load((0, 0), (1, 0))), True, id="dram at 2**32 - 1")
    yield pytest.param(prog(top - 1, load((1, 0), (1, 0), rows=0)), False, id="rows 0 never checked")
    yield pytest.param(prog(top - 1, load((0, 0), (1, 0), length=0)), False, id="len 0 skips the dram check")
    yield pytest.param(prog(0, load((0, 0), (0, 0), length=CFG.spad_row_bytes + 1)), True, id="row too long")
    matmul = Instruction(Opcode.MATMUL, {"acc": (0, 0), "sp": (1, 2), "rows": 3, "accumulate": 0})
    yield pytest.param(prog(top - 2, matmul), False, id="src wraps into range")
    vadd = Instruction(Opcode.VADD, {"dst": (1, CFG.acc_rows + 2), "src": (0, 0), "rows": 1})
    yield pytest.param(prog(top - 2, vadd), True, id="dst wraps one row past")
    yield pytest.param(prog(top - 1, Instruction(Opcode.PRELOAD, {"sp": (1, 1)})), False, id="preload wraps into range")
    past = Instruction(Opcode.PRELOAD, {"sp": (1, CFG.spad_rows - CFG.rows + 2)})
    yield pytest.param(prog(top - 1, past), True, id="preload wraps past")


@pytest.mark.parametrize("cfg", [CFG, CFG2], ids=["d1", "d2"])
@pytest.mark.parametrize("words,bad", list(_wrap_cases()))
def test_wrapping_addresses(words, bad, cfg):
    # Resolved addresses wrap modulo 2**32, in both forms (the board form predecodes part of the checks).
    _, ref_err = reference_dispatch(words, cfg)
    assert (ref_err is not None) == bad and (not bad or ref_err == (ErrorCode.ADDR_RANGE, 1))
    assert compare(words, cfg, 1, fpga=True) == compare(words, cfg, 1)


@pytest.mark.parametrize("case,code,pc", [
    ("zero", ErrorCode.ILLEGAL_INSTR, 1),
    ("fall_off", ErrorCode.PC_RANGE, 64),
    ("bad_dep", ErrorCode.ILLEGAL_INSTR, 1),
    ("spad_rows", ErrorCode.ADDR_RANGE, 1),
    ("dram_end", ErrorCode.ADDR_RANGE, 1),
    ("dram_far", ErrorCode.ADDR_RANGE, 1),
    ("preload", ErrorCode.ADDR_RANGE, 1),
])
@pytest.mark.parametrize("cfg", [CFG, CFG2], ids=["d1", "d2"])
def test_error_cases(case, code, pc, cfg):
    nop = encode(Instruction(Opcode.NOP))
    if case == "zero":
        words = [nop, 0]
    elif case == "fall_off":
        words = [nop] * 64
    elif case == "bad_dep":
        words = [nop, encode(Instruction(Opcode.LOAD_SP, {"sp": (0, 0), "dram": (0, 0), "rows": 1, "len": 1,
                                                          "stride": 0})) | field_slice(Header, "pop_prev").put(1)]
    elif case == "spad_rows":
        words = [nop, encode(Instruction(Opcode.LOAD_SP, {"sp": (0, CFG.spad_rows - 1), "dram": (0, 0),
                                                          "rows": 2, "len": 1, "stride": 0}))]
    elif case == "dram_end":
        words = [encode(Instruction(Opcode.SETI, {"rd": 2, "imm": CFG.dram_bytes - 100})),
                 encode(Instruction(Opcode.LOAD_SP, {"sp": (0, 0), "dram": (2, 0), "rows": 2, "len": 4,
                                                     "stride": 97}))]
    elif case == "dram_far":
        # The last legal byte, then a span far past the DRAM (a negative room in the predecoded form).
        words = [encode(Instruction(Opcode.LOAD_ACC32, {"acc": (0, 0), "dram": (0, CFG.dram_bytes - 4), "rows": 1,
                                                        "len": 1, "stride": (1 << 24) - 1})),
                 encode(Instruction(Opcode.LOAD_ACC32, {"acc": (0, 0), "dram": (0, 0), "rows": 3, "len": 1,
                                                        "stride": (1 << 24) - 1}))]
    else:
        words = [nop, encode(Instruction(Opcode.PRELOAD, {"sp": (0, CFG.spad_rows - CFG.rows + 1)}))]
    ref, ref_err = reference_dispatch(words, cfg)
    assert ref_err == (code, pc)
    compare(words, cfg, 1)
    compare(words, cfg, 1, fpga=True)
