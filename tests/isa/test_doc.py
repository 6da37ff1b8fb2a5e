"""docs/isa.md is generated from the declaration; fail when the checked-in copy is stale."""

from pathlib import Path

from npuforge.config import render_config_doc
from npuforge.isa.doc import render_isa_doc
from npuforge.isa.spec import INSTRUCTIONS

DOCS = Path(__file__).resolve().parents[2] / "docs"
DOC = DOCS / "isa.md"


def test_isa_doc_is_up_to_date():
    assert DOC.read_text() == render_isa_doc(), "docs/isa.md is stale: run 'npuforge isa-doc' (or make isa-doc)"


def test_isa_doc_covers_every_instruction():
    text = render_isa_doc()
    for spec in INSTRUCTIONS:
        assert f"### `{spec.mnemonic}` (opcode {spec.op.value}," in text


def test_config_doc_is_up_to_date():
    assert (DOCS / "config.md").read_text() == render_config_doc(), "docs/config.md is stale: run 'npuforge isa-doc'"
