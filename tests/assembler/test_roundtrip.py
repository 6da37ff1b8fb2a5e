"""Property tests: encode/decode, format/assemble and disassemble/assemble round trips.

The strategy builds a random legal instruction for every opcode, with operand
values across their whole ranges and random legal dependency flags, all read
from the ISA declaration.
"""

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from npuforge.assembler.asm import AsmError, assemble
from npuforge.assembler.disasm import disassemble, disassemble_image
from npuforge.config import load_config
from npuforge.isa.encoding import Instruction, decode, encode, format_instruction, operand_range
from npuforge.isa.spec import INSTRUCTIONS, LEGAL_DEPS, NUM_REGS, WORD_BITS, Opcode

CFG = load_config("8x8")


def _value(spec, operand):
    if operand.kind == "flag":
        return st.integers(0, 1)
    if operand.kind == "reg":
        return st.integers(0, NUM_REGS - 1)
    lo, hi = operand_range(spec.op, operand.name)
    values = st.one_of(st.sampled_from([lo, hi, 0] if lo <= 0 else [lo, hi]), st.integers(lo, hi))
    if operand.kind in ("mem", "dram"):
        return st.tuples(st.integers(0, NUM_REGS - 1), values)
    return values


def instructions_of(spec):
    legal = sorted(f for f, ch in LEGAL_DEPS[spec.queue].items() if ch is not None)
    return st.builds(lambda args, deps: Instruction(spec.op, args, frozenset(deps)),
                     st.fixed_dictionaries({o.name: _value(spec, o) for o in spec.operands}),
                     st.sets(st.sampled_from(legal)) if legal else st.just(set()))


instructions = st.one_of([instructions_of(spec) for spec in INSTRUCTIONS])


@pytest.mark.parametrize("spec", INSTRUCTIONS, ids=lambda s: s.mnemonic)
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_every_opcode_round_trips(spec, data):
    instr = data.draw(instructions_of(spec))
    word = encode(instr)
    assert 0 < word < 1 << WORD_BITS
    assert decode(word) == instr
    assert assemble(format_instruction(instr), CFG).words == (word,)


@settings(max_examples=300, deadline=None)
@given(instructions)
def test_canonical_text_reassembles(instr):
    text = format_instruction(instr)
    assert assemble(text, CFG).words == (encode(instr),)
    assert assemble(text.upper(), CFG).words == (encode(instr),)


# A program: legal instructions, branches with targets in and around the program, and raw words,
# legal or not (opcode 0, reserved bits, illegal flags, anything).
_branch = st.builds(lambda rd, t: ("dbnz", rd, t), st.integers(0, NUM_REGS - 1), st.integers(-3, 40))
_raw = st.one_of(st.integers(0, (1 << WORD_BITS) - 1), st.integers(0, 255), st.just(0))
_item = st.one_of(instructions, _branch, _raw)


def _program(items):
    words = []
    for item in items:
        if isinstance(item, Instruction):
            words.append(encode(item))
        elif isinstance(item, tuple):
            words.append(encode(Instruction(Opcode.DBNZ, {"rd": item[1], "target": item[2]})))
        else:
            words.append(item)
    return words


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_item, max_size=40), st.booleans())
def test_disassembly_reassembles_byte_identically(items, labels):
    words = _program(items)
    text = disassemble(words, labels=labels)
    assert assemble(text, CFG).words == tuple(words)
    assert assemble(disassemble(words, indices=True), CFG).words == tuple(words)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, (1 << WORD_BITS) - 1), max_size=20))
def test_any_words_reassemble(words):
    image = assemble(disassemble(words), CFG).image
    assert assemble(disassemble_image(image), CFG).image.to_bytes() == image.to_bytes()
    assert image.words == tuple(words)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_arbitrary_text_only_raises_asm_error(text):
    try:
        assemble(text, CFG)
    except AsmError as e:
        assert 1 <= e.line <= text.count("\n") + 1
        assert str(e).startswith(f"<string>:{e.line}:{e.col}: error: ")


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(["seti", "load.sp", "dbnz", "r1", "r16", "=", ",", "+", "-", "(", ")", "rows",
                                 "sp", "0x", "1", "99999999999", ":", "x", ".const", ".word", "relu", "push_next",
                                 "<<", "/", "0", "\n", ";"]), max_size=30))
def test_token_soup_only_raises_asm_error(tokens):
    text = " ".join(tokens)
    try:
        words = assemble(text, CFG).words
    except AsmError:
        return
    assert assemble(disassemble(words), CFG).words == words
