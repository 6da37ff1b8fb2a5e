"""Encoding, decoding and canonical text of instructions, all derived from :mod:`.spec`.

Bit positions come from the Amaranth layouts in the declaration; this module
turns them into plain shift-and-mask tables once, so that encoding and decoding
run at Python speed (the reference simulator and the fuzzers decode millions of
words) without re-typing a single position.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Mapping

from amaranth.lib import data

from .spec import (BY_MNEMONIC, BY_OPCODE, LEGAL_DEPS, NUM_REGS, WORD_BITS, ErrorCode,
                   Header, InstrSpec, Opcode, Operand, Queue)

__all__ = ["Instruction", "EncodeError", "DecodeError", "encode", "decode", "format_instruction",
           "field_slice", "DEP_FLAGS", "operand_range"]

DEP_FLAGS = ("pop_prev", "pop_next", "push_prev", "push_next")


class EncodeError(ValueError):
    """An operand value does not fit its field, or an operand is missing or unknown.

    ``operand`` names the offending operand (None when the problem is the whole instruction).
    """

    def __init__(self, message: str, operand: str | None = None):
        super().__init__(message)
        self.operand = operand


class DecodeError(ValueError):
    """A word is not a legal instruction. ``code`` is the error the hardware reports for it."""

    def __init__(self, message: str, code: ErrorCode = ErrorCode.ILLEGAL_INSTR):
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Slice:
    offset: int
    width: int
    signed: bool

    @property
    def mask(self) -> int:
        return ((1 << self.width) - 1) << self.offset

    def get(self, word: int) -> int:
        v = (word >> self.offset) & ((1 << self.width) - 1)
        if self.signed and v >> (self.width - 1):
            v -= 1 << self.width
        return v

    def put(self, value: int) -> int:
        return (value & ((1 << self.width) - 1)) << self.offset

    @property
    def lo(self) -> int:
        return -(1 << (self.width - 1)) if self.signed else 0

    @property
    def hi(self) -> int:
        return (1 << (self.width - 1)) - 1 if self.signed else (1 << self.width) - 1


def field_slice(layout, path: str) -> Slice:
    """Bit offset, width and signedness of a dotted field path inside a Struct layout."""
    offset = 0
    shape = layout
    for part in path.split("."):
        lay = data.Layout.cast(shape)
        f = lay[part]
        offset += f.offset
        shape = f.shape
    if isinstance(shape, data.ShapeCastable) and not hasattr(shape, "as_shape"):
        shape = shape.as_shape()
    cast = shape.as_shape() if hasattr(shape, "as_shape") else shape
    from amaranth.hdl import Shape
    cast = Shape.cast(cast)
    return Slice(offset, cast.width, cast.signed)


OPCODE_SLICE = field_slice(Header, "op")
_DEP_SLICES = {name: field_slice(Header, name) for name in DEP_FLAGS}
_VALID_OPCODES = {op.value for op in Opcode}


@dataclass(frozen=True)
class _OperandCodec:
    operand: Operand
    slices: tuple[Slice, ...]       # one slice, or (reg, off) for mem / dram


@lru_cache(maxsize=None)
def _codec(op: Opcode) -> tuple[tuple[_OperandCodec, ...], int]:
    """Operand codecs of an opcode and the mask of the bits it uses."""
    spec = BY_OPCODE[op]
    layout = spec.fmt_layout
    used = OPCODE_SLICE.mask
    for s in _DEP_SLICES.values():
        used |= s.mask
    codecs = []
    for operand in spec.operands:
        if operand.kind in ("mem", "dram"):
            slices = (field_slice(layout, operand.path + ".reg"), field_slice(layout, operand.path + ".off"))
        else:
            slices = (field_slice(layout, operand.path),)
        for s in slices:
            used |= s.mask
        codecs.append(_OperandCodec(operand, slices))
    return tuple(codecs), used


def operand_range(op: Opcode, name: str) -> tuple[int, int]:
    """Allowed (lo, hi) of an operand's value (the offset for mem / dram operands)."""
    for c in _codec(op)[0]:
        if c.operand.name == name:
            return c.slices[-1].lo, c.slices[-1].hi
    raise KeyError(name)


@dataclass(frozen=True)
class Instruction:
    """A decoded instruction: opcode, operand values by operand name, and its set dependency flags.

    Operand values are ints; ``mem`` and ``dram`` operands are ``(reg, offset)`` pairs;
    flags are 0 or 1. Missing optional operands take 0.
    """
    op: Opcode
    args: Mapping[str, object] = field(default_factory=dict)
    deps: frozenset = frozenset()

    def __post_init__(self):
        object.__setattr__(self, "args", dict(self.args))
        object.__setattr__(self, "deps", frozenset(self.deps))

    def __hash__(self):
        return hash((self.op, tuple(sorted(self.args.items())), self.deps))

    @property
    def spec(self) -> InstrSpec:
        return BY_OPCODE[self.op]

    @property
    def queue(self) -> Queue:
        return BY_OPCODE[self.op].queue

    def arg(self, name: str):
        """An operand's value, 0 (or (0, 0)) when it was not given."""
        if name in self.args:
            return self.args[name]
        kind = next(o.kind for o in self.spec.operands if o.name == name)
        return (0, 0) if kind in ("mem", "dram") else 0


def encode(instr: Instruction) -> int:
    """Encode an instruction into its 128-bit word.

    Raises
    ------
    EncodeError
        For an unknown or missing operand, a value outside its field, or a
        dependency flag the instruction's queue does not have.
    """
    spec = BY_OPCODE[instr.op]
    codecs, _ = _codec(instr.op)
    known = {c.operand.name for c in codecs}
    for name in instr.args:
        if name not in known:
            raise EncodeError(f"{spec.mnemonic}: unknown operand '{name}'; it takes "
                              f"{', '.join(sorted(known)) or 'no operands'}", name)
    word = OPCODE_SLICE.put(instr.op.value)
    legal = LEGAL_DEPS[spec.queue]
    for flag in instr.deps:
        if flag not in _DEP_SLICES:
            raise EncodeError(f"{spec.mnemonic}: unknown dependency flag '{flag}'", flag)
        if legal[flag] is None:
            allowed = [f for f, ch in legal.items() if ch is not None]
            raise EncodeError(f"{spec.mnemonic}: a {spec.queue.name.lower()} instruction cannot {flag}; "
                              f"allowed: {', '.join(allowed) or 'none'}", flag)
        word |= _DEP_SLICES[flag].put(1)
    for c in codecs:
        o = c.operand
        if o.name not in instr.args:
            if o.required:
                raise EncodeError(f"{spec.mnemonic}: missing operand '{o.name}' ({o.doc})", o.name)
            continue
        value = instr.args[o.name]
        if o.kind in ("mem", "dram"):
            reg, off = value
            _check(spec, o, "register", reg, 0, NUM_REGS - 1)
            _check(spec, o, "offset", off, c.slices[1].lo, c.slices[1].hi)
            word |= c.slices[0].put(reg) | c.slices[1].put(off)
        else:
            s = c.slices[0]
            if o.kind == "reg":
                _check(spec, o, "register", value, 0, NUM_REGS - 1)
            elif o.kind == "flag":
                _check(spec, o, "flag", int(value), 0, 1)
            elif o.kind == "int" and s.signed:
                # 32-bit immediates accept the unsigned spelling too (0xffffffff == -1).
                if s.width == 32 and 0 <= value <= 0xFFFFFFFF:
                    value = value - (1 << 32) if value >> 31 else value
                _check(spec, o, "value", value, s.lo, s.hi)
            else:
                # A target outside the program is legal to encode (decode accepts it; it traps as
                # PC_RANGE when taken), so targets take the field's full signed range.
                _check(spec, o, "value", value, s.lo if o.kind in ("int", "target") else 0, s.hi)
            word |= s.put(int(value))
    return word


def _check(spec, operand, what, value, lo, hi):
    if not isinstance(value, int) or isinstance(value, bool) and what != "flag" or not lo <= value <= hi:
        raise EncodeError(f"{spec.mnemonic}: {operand.name}: {what} must be in {lo}..{hi}, got {value!r}",
                          operand.name)


def decode(word: int) -> Instruction:
    """Decode a 128-bit word.

    Raises
    ------
    DecodeError
        Unknown opcode, a reserved bit set, or a dependency flag the queue does not have
        (all ``ErrorCode.ILLEGAL_INSTR``), or a word wider than 128 bits.
    """
    if not 0 <= word < 1 << WORD_BITS:
        raise DecodeError(f"word {word:#x} is not a {WORD_BITS}-bit value")
    opv = OPCODE_SLICE.get(word)
    if opv not in _VALID_OPCODES:
        raise DecodeError(f"unknown opcode {opv}")
    op = Opcode(opv)
    codecs, used = _codec(op)
    if word & ~used:
        raise DecodeError(f"{BY_OPCODE[op].mnemonic}: reserved bits set ({word & ~used:#x})")
    deps = frozenset(f for f, s in _DEP_SLICES.items() if s.get(word))
    legal = LEGAL_DEPS[BY_OPCODE[op].queue]
    for flag in deps:
        if legal[flag] is None:
            raise DecodeError(f"{BY_OPCODE[op].mnemonic}: dependency flag {flag} is not legal on the "
                              f"{BY_OPCODE[op].queue.name.lower()} queue")
    args = {}
    for c in codecs:
        if c.operand.kind in ("mem", "dram"):
            args[c.operand.name] = (c.slices[0].get(word), c.slices[1].get(word))
        else:
            args[c.operand.name] = c.slices[0].get(word)
    return Instruction(op, args, deps)


def _format_number(operand: Operand, value: int) -> str:
    return f"{value:#x}" if operand.kind == "dram" or (operand.kind == "int" and abs(value) > 0xFFFF) else str(value)


def format_operand(operand: Operand, value, labels: Mapping[int, str] | None = None) -> str:
    """Canonical text of one operand value (without its name)."""
    if operand.kind == "reg":
        return f"r{value}"
    if operand.kind in ("mem", "dram"):
        reg, off = value
        if reg == 0:
            return _format_number(operand, off)
        return f"r{reg}" if off == 0 else f"r{reg}+{_format_number(operand, off)}"
    if operand.kind == "target" and labels and value in labels:
        return labels[value]
    return _format_number(operand, value)


def format_instruction(instr: Instruction, labels: Mapping[int, str] | None = None) -> str:
    """Canonical assembly text of one instruction; it reassembles to the same word.

    Positional instructions (scalar ones) print ``mnemonic a, b``; the others print
    ``mnemonic name=value, ...`` then their set flags and dependency flags.
    Optional operands equal to 0 are left out.
    """
    spec = instr.spec
    parts = []
    for o in spec.operands:
        value = instr.arg(o.name)
        if o.kind == "flag":
            if value:
                parts.append(o.name)
            continue
        if not o.required and value == 0:
            continue
        text = format_operand(o, value, labels)
        parts.append(text if spec.positional else f"{o.name}={text}")
    parts += [f for f in DEP_FLAGS if f in instr.deps]
    return spec.mnemonic + (" " + ", ".join(parts) if parts else "")


def mnemonic_spec(mnemonic: str) -> InstrSpec | None:
    return BY_MNEMONIC.get(mnemonic.lower())
