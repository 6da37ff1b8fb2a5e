"""The program builder: labels, branch resolution, listings and its errors."""

import pytest

from npuforge.assembler.builder import BuildError, ProgramBuilder
from npuforge.config import load_config
from npuforge.isa.encoding import decode
from npuforge.isa.spec import Opcode


@pytest.fixture
def builder():
    return ProgramBuilder(load_config("4x4"))


def test_labels_resolve_forward_and_backward(builder):
    builder.emit("seti", rd=1, imm=3)
    builder.label("top")
    builder.emit("load.sp", sp=(2, 4), dram=0x40, rows=4, len=4, stride=4, deps=["push_next"])
    builder.emit("dbnz", rd=1, target="top")
    builder.emit("dbnz", rd=2, target="end")
    builder.label("end")
    builder.emit("halt")
    ins = [decode(w) for w in builder.words()]
    assert [i.op for i in ins] == [Opcode.SETI, Opcode.LOAD_SP, Opcode.DBNZ, Opcode.DBNZ, Opcode.HALT]
    assert ins[2].args["target"] == 1 and ins[3].args["target"] == 4
    assert ins[1].args["sp"] == (2, 4) and ins[1].deps == {"push_next"}
    text = builder.text(header="made by a test")
    assert text.splitlines()[0] == "; made by a test"
    assert "top:\n    load.sp sp=r2+4, dram=0x40, rows=4, len=4, stride=4, push_next\n    dbnz r1, top" in text
    assert builder.image().config_hash == load_config("4x4").hash


@pytest.mark.parametrize("call, message", [
    (lambda b: b.emit("lod.sp"), "unknown mnemonic 'lod.sp'"),
    (lambda b: b.emit("seti", rd=16, imm=0), "instruction 0: seti: rd: register must be in 0..15, got 16"),
    (lambda b: b.emit("load.sp", sp=0, dram=0, rows=1, len=1, stride=0, deps=["pop_prev"]),
     "instruction 0: load.sp: a load instruction cannot pop_prev; allowed: pop_next, push_next"),
    (lambda b: (b.label("a"), b.label("a")), "label 'a' defined twice"),
])
def test_errors(builder, call, message):
    with pytest.raises(BuildError) as e:
        call(builder)
    assert str(e.value) == message


def test_undefined_branch_label(builder):
    builder.emit("dbnz", rd=1, target="nowhere")
    with pytest.raises(BuildError, match="branch to undefined label 'nowhere'"):
        builder.words()
