"""Build programs from Python: the kernels' (and later the compiler's) way to emit code.

A :class:`ProgramBuilder` collects instructions, labels and comments; it gives
the instruction words (through :func:`npuforge.isa.encoding.encode`) and an
assembly listing in the canonical syntax that the assembler turns back into the
same words.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..isa.encoding import Instruction, encode, format_instruction
from ..isa.image import ProgramImage
from ..isa.spec import BY_MNEMONIC

__all__ = ["ProgramBuilder", "BuildError"]


class BuildError(ValueError):
    """A builder call is wrong (unknown mnemonic, duplicate or missing label, bad operand)."""


@dataclass
class _Line:
    instr: Instruction | None = None
    label: str | None = None
    comment: str | None = None
    target: str | None = None      # label a branch refers to, resolved at the end


@dataclass
class ProgramBuilder:
    """Accumulates a program.

    Examples
    --------
    >>> b = ProgramBuilder(config)
    >>> b.emit("seti", rd=1, imm=4)
    >>> b.label("loop")
    >>> b.emit("load.sp", sp=0, dram=(2, 0), rows=8, len=8, stride=64, deps=["push_next"])
    >>> b.emit("dbnz", rd=1, target="loop")
    >>> b.emit("halt")
    """
    config: object
    _lines: list[_Line] = field(default_factory=list)
    _labels: dict[str, int] = field(default_factory=dict)
    _count: int = 0

    def __len__(self) -> int:
        """Number of instructions emitted so far (the index the next one gets)."""
        return self._count

    def comment(self, text: str) -> None:
        self._lines.append(_Line(comment=text))

    def label(self, name: str) -> None:
        if not name.isidentifier():
            raise BuildError(f"label '{name}' is not an identifier")
        if name in self._labels:
            raise BuildError(f"label '{name}' defined twice")
        self._labels[name] = self._count
        self._lines.append(_Line(label=name))

    def emit(self, mnemonic: str, deps=(), comment: str | None = None, **operands) -> int:
        """Append one instruction; returns its index.

        ``mem`` and ``dram`` operands take an int (register r0) or a ``(reg, offset)`` pair;
        flags take booleans; a branch ``target`` may be a label name.
        """
        spec = BY_MNEMONIC.get(mnemonic)
        if spec is None:
            raise BuildError(f"unknown mnemonic '{mnemonic}'")
        kinds = {o.name: o.kind for o in spec.operands}
        args, target = {}, None
        for name, value in operands.items():
            kind = kinds.get(name)
            if kind in ("mem", "dram") and not isinstance(value, tuple):
                value = (0, value)
            elif kind == "target" and isinstance(value, str):
                target, value = value, 0
            elif kind == "flag":
                value = int(bool(value))
            args[name] = value
        instr = Instruction(spec.op, args, frozenset(deps))
        try:
            encode(instr)
        except ValueError as e:
            raise BuildError(f"instruction {self._count}: {e}") from None
        self._lines.append(_Line(instr=instr, comment=comment, target=target))
        self._count += 1
        return self._count - 1

    def _resolved(self) -> list[_Line]:
        out = []
        for line in self._lines:
            if line.target is not None:
                if line.target not in self._labels:
                    raise BuildError(f"branch to undefined label '{line.target}'")
                args = dict(line.instr.args, target=self._labels[line.target])
                line = _Line(Instruction(line.instr.op, args, line.instr.deps), comment=line.comment)
            out.append(line)
        return out

    def instructions(self) -> list[Instruction]:
        return [line.instr for line in self._resolved() if line.instr is not None]

    def words(self) -> list[int]:
        return [encode(i) for i in self.instructions()]

    def image(self) -> ProgramImage:
        return ProgramImage(tuple(self.words()), self.config.hash)

    def text(self, header: str | None = None) -> str:
        """The program as assembly source, with its labels and comments."""
        labels = {index: name for name, index in self._labels.items()}
        out = [f"; {line}" for line in (header or "").splitlines()]
        for line in self._resolved():
            if line.label is not None:
                out.append(f"{line.label}:")
            elif line.instr is not None:
                text = "    " + format_instruction(line.instr, labels)
                out.append(text + (f"    ; {line.comment}" if line.comment else ""))
            elif line.comment is not None:
                out.append(f"    ; {line.comment}")
        return "\n".join(out) + "\n"
