"""docs/isa.md is generated from the declaration; fail when the checked-in copy is stale."""

from pathlib import Path

from npuforge.isa.doc import render_isa_doc
from npuforge.isa.spec import INSTRUCTIONS

DOC = Path(__file__).resolve().parents[2] / "docs" / "isa.md"


def test_isa_doc_is_up_to_date():
    assert DOC.read_text() == render_isa_doc(), "docs/isa.md is stale: run 'npuforge isa-doc' (or make isa-doc)"


def test_isa_doc_covers_every_instruction():
    text = render_isa_doc()
    for spec in INSTRUCTIONS:
        assert f"### `{spec.mnemonic}` (opcode {spec.op.value}," in text
