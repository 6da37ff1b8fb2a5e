"""Encoder and decoder errors: each bad instruction or word is refused with a message naming what is wrong."""

import pytest

from npuforge.isa.encoding import (DecodeError, EncodeError, Instruction, decode, encode, field_slice,
                                   format_instruction, operand_range)
from npuforge.isa.spec import WORD_BITS, ErrorCode, Header, Opcode

LOAD = dict(sp=(1, 16), dram=(2, 0x100), rows=8, len=8, stride=64)


def _load(**changes):
    args = dict(LOAD, **changes)
    return Instruction(Opcode.LOAD_SP, {k: v for k, v in args.items() if v is not None})


@pytest.mark.parametrize("instr, operand, message", [
    (_load(rows=70000), "rows", "load.sp: rows: value must be in 0..65535, got 70000"),
    (_load(rows=-1), "rows", "load.sp: rows: value must be in 0..65535, got -1"),
    (_load(stride=1 << 24), "stride", "load.sp: stride: value must be in 0..16777215, got 16777216"),
    (_load(sp=(16, 0)), "sp", "load.sp: sp: register must be in 0..15, got 16"),
    (_load(dram=(0, 1 << 24)), "dram", "load.sp: dram: offset must be in 0..16777215, got 16777216"),
    (_load(rows=None), "rows", "load.sp: missing operand 'rows' (number of rows)"),
    (Instruction(Opcode.LOAD_SP, dict(LOAD, foo=1)), "foo",
     "load.sp: unknown operand 'foo'; it takes dram, len, rows, sp, stride"),
    (Instruction(Opcode.SETI, {"rd": 1, "imm": 1 << 32}), "imm", "seti: imm: value must be in "
     "-2147483648..2147483647, got 4294967296"),
    (Instruction(Opcode.SETI, {"rd": 1, "imm": -(1 << 31) - 1}), "imm", "seti: imm: value must be in "
     "-2147483648..2147483647, got -2147483649"),
    (Instruction(Opcode.VQUANT, {"dst": (0, 0), "src": (0, 0), "rows": 1, "qreg": 1, "zp": 128}), "zp",
     "vquant: zp: value must be in -128..127, got 128"),
    (Instruction(Opcode.VQUANT, {"dst": (0, 0), "src": (0, 0), "rows": 1, "qreg": 1, "shift": 64}), "shift",
     "vquant: shift: value must be in 0..63, got 64"),
    (Instruction(Opcode.MATMUL, {"acc": (0, 0), "sp": (0, 0), "rows": 1, "accumulate": 2}), "accumulate",
     "matmul: accumulate: flag must be in 0..1, got 2"),
    (Instruction(Opcode.LOAD_SP, LOAD, {"pop_prev"}), "pop_prev",
     "load.sp: a load instruction cannot pop_prev; allowed: pop_next, push_next"),
    (Instruction(Opcode.STORE_SP, {"dram": (0, 0), "sp": (0, 0), "rows": 1, "len": 1, "stride": 1}, {"push_next"}),
     "push_next", "store.sp: a store instruction cannot push_next; allowed: pop_prev, push_prev"),
    (Instruction(Opcode.NOP, {}, {"push_next"}), "push_next",
     "nop: a scalar instruction cannot push_next; allowed: none"),
    (Instruction(Opcode.NOP, {}, {"pop_later"}), "pop_later", "nop: unknown dependency flag 'pop_later'"),
])
def test_encode_errors(instr, operand, message):
    with pytest.raises(EncodeError) as err:
        encode(instr)
    assert str(err.value) == message
    assert err.value.operand == operand


def _word(**changes):
    return encode(_load(**changes))


def test_decode_opcode_zero_traps():
    with pytest.raises(DecodeError) as err:
        decode(0)
    assert str(err.value) == "unknown opcode 0"
    assert err.value.code == ErrorCode.ILLEGAL_INSTR


def test_decode_unknown_opcode():
    op = field_slice(Header, "op")
    unused = next(v for v in range(1, 1 << op.width) if v not in {o.value for o in Opcode})
    with pytest.raises(DecodeError, match=f"^unknown opcode {unused}$"):
        decode(op.put(unused))


def test_decode_reserved_bits():
    word = encode(Instruction(Opcode.NOP))
    with pytest.raises(DecodeError) as err:
        decode(word | 1 << (WORD_BITS - 1))
    assert str(err.value) == f"nop: reserved bits set ({1 << (WORD_BITS - 1):#x})"
    assert err.value.code == ErrorCode.ILLEGAL_INSTR
    # load.sp leaves bits above its quantisation fields unused, too.
    with pytest.raises(DecodeError, match="^load.sp: reserved bits set"):
        decode(_word() | 1 << (WORD_BITS - 1))


def test_decode_illegal_dependency_flag():
    word = _word() | field_slice(Header, "pop_prev").put(1)
    with pytest.raises(DecodeError) as err:
        decode(word)
    assert str(err.value) == "load.sp: dependency flag pop_prev is not legal on the load queue"


@pytest.mark.parametrize("word", [-1, 1 << WORD_BITS])
def test_decode_refuses_non_words(word):
    with pytest.raises(DecodeError, match="is not a 128-bit value"):
        decode(word)


def test_immediate_accepts_unsigned_spelling():
    minus_one = Instruction(Opcode.SETI, {"rd": 3, "imm": -1})
    assert encode(Instruction(Opcode.SETI, {"rd": 3, "imm": 0xFFFFFFFF})) == encode(minus_one)
    assert decode(encode(minus_one)) == minus_one


def test_branch_target_outside_program_round_trips():
    # decode accepts any 32-bit target (taking it traps as PC_RANGE), so encode must too.
    lo, hi = operand_range(Opcode.DBNZ, "target")
    for target in (lo, -1, 0, hi):
        instr = Instruction(Opcode.DBNZ, {"rd": 1, "target": target})
        assert decode(encode(instr)) == instr


def test_format_instruction_canonical_text():
    assert format_instruction(_load()) == "load.sp sp=r1+16, dram=r2+0x100, rows=8, len=8, stride=64"
    assert format_instruction(Instruction(Opcode.SETI, {"rd": 1, "imm": -7})) == "seti r1, -7"
    assert format_instruction(Instruction(Opcode.DBNZ, {"rd": 1, "target": 0}), {0: "loop"}) == "dbnz r1, loop"
