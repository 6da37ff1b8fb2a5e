"""The disassembler: labels, illegal words, image headers."""

import pytest

from npuforge.assembler.asm import assemble
from npuforge.assembler.disasm import disassemble, disassemble_image
from npuforge.config import load_config
from npuforge.isa.encoding import Instruction, encode, field_slice
from npuforge.isa.spec import Header, Opcode

CFG = load_config("8x8")


def enc(op, deps=(), **args):
    return encode(Instruction(op, args, frozenset(deps)))


PROGRAM = [
    enc(Opcode.SETI, rd=1, imm=4),
    enc(Opcode.LOAD_SP, ["push_next"], sp=(1, 16), dram=(2, 0x100), rows=8, len=8, stride=64),
    enc(Opcode.DBNZ, rd=1, target=1),
    enc(Opcode.DBNZ, rd=2, target=5),
    enc(Opcode.DBNZ, rd=3, target=-2),
    0,
]


def test_listing():
    assert disassemble(PROGRAM) == (
        "    seti r1, 4\n"
        "L1:\n"
        "    load.sp sp=r1+16, dram=r2+0x100, rows=8, len=8, stride=64, push_next\n"
        "    dbnz r1, L1\n"
        "    dbnz r2, L5\n"
        "    dbnz r3, -2\n"
        "L5:\n"
        "    .word 0x00000000000000000000000000000000    ; illegal: unknown opcode 0\n")


def test_without_labels_and_with_indices():
    text = disassemble(PROGRAM, labels=False, indices=True)
    assert "L1" not in text
    assert "    dbnz r1, 1    ; [2]\n" in text
    assert text.endswith("; illegal: unknown opcode 0 [5]\n")
    assert assemble(text, CFG).words == tuple(PROGRAM)


def test_label_after_the_last_instruction():
    words = [enc(Opcode.DBNZ, rd=1, target=1)]
    assert disassemble(words) == "    dbnz r1, L1\nL1:\n"
    assert assemble(disassemble(words), CFG).words == tuple(words)


def test_illegal_words_name_their_reason():
    nop = enc(Opcode.NOP)
    pop_prev = field_slice(Header, "pop_prev").put(1)
    text = disassemble([nop | 1 << 127, nop | pop_prev])
    lines = text.splitlines()
    assert lines[0] == (f"    .word {nop | 1 << 127:#034x}    ; illegal: nop: reserved bits set ({1 << 127:#x})")
    assert lines[1] == (f"    .word {nop | pop_prev:#034x}    ; illegal: nop: dependency flag pop_prev "
                        f"is not legal on the scalar queue")
    assert assemble(text, CFG).words == (nop | 1 << 127, nop | pop_prev)


def test_image_header():
    image = assemble("seti r1, 3\nhalt\n", CFG).image
    text = disassemble_image(image)
    assert text.splitlines()[:2] == ["; npuforge program image, ISA version 1",
                                     f"; config hash {CFG.hash}, 2 words"]
    assert assemble(text, CFG).image == image


@pytest.mark.parametrize("bad", [-1, 1 << 128, "0", 1.0, True])
def test_refuses_non_words(bad):
    with pytest.raises(ValueError, match=r"^word 1: .* is not a 128-bit value$"):
        disassemble([0, bad])
