"""The disassembler: instruction words -> assembly text that reassembles to the same bytes.

Legal words are printed in the canonical syntax of
:func:`npuforge.isa.encoding.format_instruction`; branch targets inside the
program get labels ``L<index>``; a word that does not decode is printed as a
raw ``.word`` with the reason in a comment, so that any sequence of 128-bit
words, legal or not, survives ``assemble(disassemble(words))`` byte for byte.
"""

from __future__ import annotations

from typing import Sequence

from ..isa.encoding import DecodeError, EncodeError, decode, encode, format_instruction
from ..isa.image import ProgramImage
from ..isa.spec import ISA_VERSION, WORD_BITS

__all__ = ["disassemble", "disassemble_image"]

_HEX_DIGITS = WORD_BITS // 4


def disassemble(words: Sequence[int], *, labels: bool = True, indices: bool = False) -> str:
    """Assembly text of a sequence of instruction words.

    Parameters
    ----------
    words : sequence of int
        128-bit words, legal or not.
    labels : bool
        Name branch targets that lie in ``0..len(words)`` ``L<index>`` and place the
        labels before their instruction (or at the end for ``len(words)``); with False,
        targets stay numeric.
    indices : bool
        Append each word's index as a comment (``; [12]``), as simulator errors name it.

    Returns
    -------
    str
        One line per word (plus label lines), newline-terminated.

    Raises
    ------
    ValueError
        For a value that is not a 128-bit word.
    """
    decoded = []
    targets = set()
    for i, word in enumerate(words):
        if isinstance(word, bool) or not isinstance(word, int) or not 0 <= word < 1 << WORD_BITS:
            raise ValueError(f"word {i}: {word!r} is not a {WORD_BITS}-bit value")
        try:
            instr = decode(word)
            # Guards the byte-exact round trip should decode ever accept a word encode refuses.
            if encode(instr) != word:
                raise DecodeError("decodes, but does not encode back to the same word")
        except (DecodeError, EncodeError) as e:
            decoded.append((word, None, str(e)))
            continue
        decoded.append((word, instr, None))
        if labels:
            for o in instr.spec.operands:
                if o.kind == "target" and 0 <= instr.args[o.name] <= len(words):
                    targets.add(instr.args[o.name])
    names = {t: f"L{t}" for t in sorted(targets)}
    out = []
    for i, (word, instr, reason) in enumerate(decoded):
        if i in names:
            out.append(f"{names[i]}:")
        if instr is None:
            line = f"    .word {word:#0{_HEX_DIGITS + 2}x}    ; illegal: {reason}"
            if indices:
                line += f" [{i}]"
        else:
            line = "    " + format_instruction(instr, names)
            if indices:
                line += f"    ; [{i}]"
        out.append(line)
    if len(decoded) in names:
        out.append(f"{names[len(decoded)]}:")
    return "".join(line + "\n" for line in out)


def disassemble_image(image: ProgramImage, *, labels: bool = True, indices: bool = False) -> str:
    """Assembly text of a program image, headed by comments naming its config hash and size."""
    head = (f"; npuforge program image, ISA version {ISA_VERSION}\n"
            f"; config hash {image.config_hash}, {len(image.words)} words\n")
    return head + disassemble(image.words, labels=labels, indices=indices)
