"""The assembler: text -> instruction words and a program image.

Syntax (everything about instructions is derived from :data:`npuforge.isa.spec.INSTRUCTIONS`)::

    ; comment (also '#'), to the end of the line
    .const  N      64                 ; a named constant (also: .const N = 64)
    .tensor A_BASE 0x1000             ; a DRAM tensor address: a constant also listed in `tensors`
    start:                            ; a label: the index of the next instruction
            seti r1, N / 8            ; scalar instructions: positional operands
    loop:   load.sp sp=r2+16, dram=r3+A_BASE, rows=8, len=8, stride=N, push_next
            dbnz r1, loop             ; forward and backward label references both work
            .word 0x0                 ; a raw 128-bit word, emitted verbatim, unchecked
            halt

Operands are positional first (in the declared order, flags excluded), then
``name=value``; flags (``accumulate``, ``relu``, and the dependency flags
``pop_prev`` ``pop_next`` ``push_prev`` ``push_next``) are bare words. Register
operands are ``r0``..``r15``; address operands ``rN``, ``rN+expr`` or ``expr``
(register r0); other operands are expressions (see :mod:`.lexer`). Mnemonics,
register names and operand names are case-insensitive; symbols are not.

Constants must be defined before they are used; labels may be used anywhere.
The assembler stops at the first error and reports it as an :class:`AsmError`
naming ``file:line:col``.
"""

from __future__ import annotations

import difflib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..isa.encoding import DEP_FLAGS, EncodeError, Instruction, encode
from ..isa.image import ProgramImage
from ..isa.spec import BY_MNEMONIC, INSTRUCTIONS, LEGAL_DEPS, NUM_REGS, WORD_BITS, InstrSpec
from .errors import AsmError, SourceLine
from .lexer import IDENT_RE, REGISTER_RE, Token, eval_expr, parse_number, strip_comment, tokenize

__all__ = ["Assembled", "AsmError", "assemble", "assemble_file", "write_image", "assemble_to_file",
           "DIRECTIVES"]

DIRECTIVES = (".const", ".tensor", ".word")
_FLAG_NAMES = frozenset(DEP_FLAGS) | {o.name for s in INSTRUCTIONS for o in s.operands if o.kind == "flag"}
_NUM_REGS_TEXT = f"r0..r{NUM_REGS - 1}"


@dataclass(frozen=True)
class Assembled:
    """The result of assembling one source.

    Attributes
    ----------
    words : tuple of int
        The 128-bit instruction words.
    image : ProgramImage
        The words bound to the config's hash.
    labels, constants, tensors : dict of str to int
        Symbol values: label -> instruction index, constant -> value, tensor -> DRAM address
        (tensors are also in ``constants``).
    source_lines : tuple of int
        1-based source line of each word, for error reports of the simulators.
    """
    words: tuple[int, ...]
    image: ProgramImage
    labels: dict[str, int]
    constants: dict[str, int]
    tensors: dict[str, int]
    source_lines: tuple[int, ...]


@dataclass
class _Stmt:
    src: SourceLine
    code: str
    toks: list[Token]       # the statement's tokens, head (mnemonic or directive) first
    end_col: int
    index: int | None       # instruction index of an instruction or .word


def _check_symbol_name(tok: Token, src: SourceLine, what: str) -> str:
    name = tok.text
    if tok.kind != "name" or not IDENT_RE.fullmatch(name):
        raise src.error(tok.col, f"expected a {what} name (a letter or '_', then letters, digits or '_'), "
                                 f"got '{name}'")
    if REGISTER_RE.fullmatch(name):
        raise src.error(tok.col, f"'{name}' looks like a register and cannot name a {what}")
    if name.lower() in _FLAG_NAMES:
        raise src.error(tok.col, f"'{name}' is a flag and cannot name a {what}")
    return name


class _Assembler:
    def __init__(self, text: str, config, source: str):
        self.config = config
        self.source = source
        self.text = text
        self.labels: dict[str, int] = {}
        self.label_lines: dict[str, int] = {}
        self.constants: dict[str, int] = {}
        self.tensors: dict[str, int] = {}
        self.const_lines: dict[str, int] = {}
        self.stmts: list[_Stmt] = []

    # ---- pass 1: tokens, labels, symbol definitions, instruction indices ----

    def pass1(self) -> None:
        count = 0
        for number, raw in enumerate(self.text.split("\n"), 1):
            if raw.endswith("\r"):
                raw = raw[:-1]
            code = strip_comment(raw)
            if not code or code.isspace():
                continue
            src = SourceLine(self.source, number, raw)
            toks = tokenize(code, src)
            k = 0
            while k + 1 < len(toks) and toks[k + 1].text == ":":
                self._define(toks[k], src, "label", count)
                k += 2
            if k == len(toks):
                continue
            head = toks[k]
            if head.kind != "name":
                raise src.error(head.col, f"expected a mnemonic, a directive or a label, got '{head.text}'")
            index = None
            directive = head.text.lower()
            if not directive.startswith(".") or directive == ".word":
                index, count = count, count + 1
            elif directive in (".const", ".tensor") and k + 1 < len(toks):
                self._define(toks[k + 1], src, "constant", None)
            self.stmts.append(_Stmt(src, code, toks[k:], len(code.rstrip()) + 1, index))

    def _define(self, tok: Token, src: SourceLine, what: str, index: int | None) -> None:
        name = _check_symbol_name(tok, src, what)
        if name in self.label_lines:
            raise src.error(tok.col, f"{what} '{name}' defined twice (first on line {self.label_lines[name]})"
                            if what == "label" else
                            f"'{name}' is already a label (defined on line {self.label_lines[name]})")
        if name in self.const_lines:
            raise src.error(tok.col, f"{what} '{name}' defined twice (first on line {self.const_lines[name]})"
                            if what == "constant" else
                            f"'{name}' is already a constant (defined on line {self.const_lines[name]})")
        if what == "label":
            self.labels[name] = index
            self.label_lines[name] = src.number
        else:
            self.const_lines[name] = src.number

    # ---- pass 2: values and words ----

    def lookup(self, tok: Token, src: SourceLine) -> int:
        name = tok.text
        value = self.constants.get(name)
        if value is None:
            value = self.labels.get(name)
        if value is not None:
            return value
        if name in self.const_lines:
            raise src.error(tok.col, f"undefined symbol '{name}' (it is defined on line {self.const_lines[name]}; "
                                     f"define constants before using them)")
        close = difflib.get_close_matches(name, list(self.constants) + list(self.labels), n=1)
        raise src.error(tok.col, f"undefined symbol '{name}'" + (f"; did you mean '{close[0]}'?" if close else ""))

    def expr(self, st: _Stmt, a: int, b: int, end_col: int) -> int:
        toks = st.toks
        if b - a == 1:     # the common case, a lone number or name, without the parser
            tok = toks[a]
            if tok.kind == "num":
                return parse_number(tok, st.src)
            if tok.kind == "name" and IDENT_RE.fullmatch(tok.text) and not REGISTER_RE.fullmatch(tok.text):
                return self.lookup(tok, st.src)
        return eval_expr(toks, a, b, st.src, lambda t: self.lookup(t, st.src), end_col)

    def pass2(self) -> tuple[list[int], list[int]]:
        words, lines = [], []
        limit = self.config.imem_words
        for st in self.stmts:
            head = st.toks[0]
            if st.index is not None and st.index >= limit:
                raise st.src.error(head.col, f"program does not fit the instruction memory: instruction "
                                             f"{st.index} is past imem_words={limit} of config "
                                             f"'{self.config.name}'")
            name = head.text.lower()
            if name.startswith("."):
                word = self.directive(st, name)
                if word is None:
                    continue
            else:
                word = self.instruction(st)
            words.append(word)
            lines.append(st.src.number)
        return words, lines

    def directive(self, st: _Stmt, name: str) -> int | None:
        toks, head = st.toks, st.toks[0]
        if name == ".word":
            value = self.expr(st, 1, len(toks), st.end_col)
            if not 0 <= value < 1 << WORD_BITS:
                raise st.src.error(toks[1].col, f".word: value must be in 0..2**{WORD_BITS}-1 "
                                                f"(one {WORD_BITS}-bit word), got {value}")
            return value
        if name not in (".const", ".tensor"):
            close = difflib.get_close_matches(name, DIRECTIVES, n=1)
            raise st.src.error(head.col, f"unknown directive '{head.text}'"
                               + (f"; did you mean '{close[0]}'?" if close else
                                  f"; expected one of {', '.join(DIRECTIVES)}"))
        if len(toks) < 2:
            raise st.src.error(st.end_col, f"expected a name after {name}")
        start = 3 if len(toks) > 2 and toks[2].text in ("=", ",") else 2
        if start >= len(toks):
            raise st.src.error(st.end_col, f"expected a value after {name} {toks[1].text}")
        value = self.expr(st, start, len(toks), st.end_col)
        sym = toks[1].text
        if name == ".tensor":
            dram = self.config.dram_bytes
            if not 0 <= value < dram:
                raise st.src.error(toks[start].col, f"tensor '{sym}': address must be in 0..{dram - 1} (the DRAM "
                                                    f"of config '{self.config.name}'), got {value}")
            self.tensors[sym] = value
        self.constants[sym] = value
        return None

    def instruction(self, st: _Stmt) -> int:
        head, src = st.toks[0], st.src
        spec = BY_MNEMONIC.get(head.text.lower())
        if spec is None:
            close = difflib.get_close_matches(head.text.lower(), list(BY_MNEMONIC), n=1)
            raise src.error(head.col, f"unknown mnemonic '{head.text}'"
                            + (f"; did you mean '{close[0]}'?" if close else
                               f"; expected one of {', '.join(BY_MNEMONIC)}"))
        args, deps, cols = self.operands(st, spec)
        try:
            return encode(Instruction(spec.op, args, deps))
        except EncodeError as e:
            message = str(e)
            prefix = spec.mnemonic + ": "
            if message.startswith(prefix):
                message = message[len(prefix):]
            raise src.error(cols.get(e.operand, head.col), message) from None

    def operands(self, st: _Stmt, spec: InstrSpec):
        toks, src = st.toks, st.src
        flags = {o.name for o in spec.operands if o.kind == "flag"}
        slots = [o for o in spec.operands if o.kind != "flag"]
        by_name = {o.name: o for o in slots}
        args, deps, cols = {}, set(), {}
        positional = 0
        keyword_seen = False
        for a, b in self.groups(st):
            first = toks[a]
            op_end = toks[b].col if b < len(toks) else st.end_col
            word = first.text.lower() if first.kind == "name" else None
            if b - a >= 2 and word is not None and toks[a + 1].text == "=":
                if word in flags or word in DEP_FLAGS:
                    raise src.error(first.col, f"'{first.text}' is a flag: write it as a bare word, without '='")
                operand = by_name.get(word)
                if operand is None:
                    raise src.error(first.col, self._unknown_operand(spec, first.text, slots))
                if b - a == 2:
                    raise src.error(op_end, f"expected a value after '{first.text}='")
                keyword_seen = True
                a += 2
            elif b - a == 1 and word is not None and word in _FLAG_NAMES:
                if word in DEP_FLAGS:
                    target = deps
                elif word in flags:
                    target = None
                else:
                    legal = sorted(flags) + [f for f, ch in LEGAL_DEPS[spec.queue].items() if ch is not None]
                    raise src.error(first.col, f"{spec.mnemonic} has no flag '{first.text}'; its flags: "
                                               f"{', '.join(legal) or 'none'}")
                if word in cols:
                    raise src.error(first.col, f"flag '{word}' given twice")
                cols[word] = first.col
                if target is None:
                    args[word] = 1
                else:
                    deps.add(word)
                continue
            else:
                if keyword_seen:
                    raise src.error(first.col, f"positional operand after name=value operands; write it as "
                                               f"name=value ({spec.mnemonic} takes "
                                               f"{', '.join(o.name for o in slots)})")
                if positional >= len(slots):
                    raise src.error(first.col, f"too many operands: {spec.mnemonic} takes {len(slots)}"
                                    + (f" ({', '.join(o.name for o in slots)})" if slots else ""))
                operand = slots[positional]
                positional += 1
            if operand.name in args:
                raise src.error(first.col, f"operand '{operand.name}' given twice")
            args[operand.name] = self.value(st, operand, a, b, op_end)
            cols[operand.name] = toks[a].col
        return args, deps, cols

    @staticmethod
    def _unknown_operand(spec, name, slots) -> str:
        names = [o.name for o in slots]
        close = difflib.get_close_matches(name.lower(), names, n=1)
        return (f"unknown operand '{name}' for {spec.mnemonic}; "
                + (f"did you mean '{close[0]}'?" if close else f"it takes {', '.join(names) or 'no operands'}"))

    def groups(self, st: _Stmt):
        """Token slices of the comma-separated operands."""
        toks = st.toks
        if len(toks) == 1:
            return []
        out, start = [], 1
        for j in range(1, len(toks) + 1):
            if j == len(toks) or toks[j].text == ",":
                if j == start:
                    if j < len(toks):
                        raise st.src.error(toks[j].col, "expected an operand before ','")
                    raise st.src.error(st.end_col, "expected an operand after ','")
                out.append((start, j))
                start = j + 1
        return out

    def value(self, st: _Stmt, operand, a: int, b: int, op_end: int):
        toks, src = st.toks, st.src
        kind = operand.kind
        if kind == "reg":
            if b - a == 1 and (reg := self.register(toks[a])) is not None:
                return reg
            raise src.error(toks[a].col, f"expected a register {_NUM_REGS_TEXT}, got '{self.text_of(st, a, b)}'")
        if kind in ("mem", "dram"):
            first = toks[a]
            if first.kind == "name" and REGISTER_RE.fullmatch(first.text):
                reg = self.register(first)
                if reg is None:
                    raise src.error(first.col, f"expected a register {_NUM_REGS_TEXT}, got '{first.text}'")
                if b - a == 1:
                    return (reg, 0)
                sep = toks[a + 1]
                if sep.text == "-":
                    raise src.error(sep.col, f"address offsets are unsigned: expected rN or rN+offset, "
                                             f"got '{self.text_of(st, a, b)}'")
                if sep.text != "+":
                    raise src.error(sep.col, f"expected '+' after register '{first.text}' (rN+offset), "
                                             f"got '{sep.text}'")
                return (reg, self.expr(st, a + 2, b, op_end))
            return (0, self.expr(st, a, b, op_end))
        return self.expr(st, a, b, op_end)

    @staticmethod
    def register(tok: Token) -> int | None:
        m = REGISTER_RE.fullmatch(tok.text) if tok.kind == "name" else None
        # The length check keeps int() away from a 5000-digit "register" in fuzzed input.
        if m is None or len(m.group(1)) > len(str(NUM_REGS)):
            return None
        n = int(m.group(1))
        return n if n < NUM_REGS else None

    @staticmethod
    def text_of(st: _Stmt, a: int, b: int) -> str:
        last = st.toks[b - 1]
        return st.code[st.toks[a].col - 1:last.col - 1 + len(last.text)]


def assemble(text: str, config, source: str = "<string>") -> Assembled:
    """Assemble source text for a hardware config.

    Parameters
    ----------
    text : str
        The assembly source.
    config : HwConfig
        The target; its hash goes into the image and ``imem_words`` bounds the program.
    source : str
        The name errors report (usually the file path).

    Returns
    -------
    Assembled

    Raises
    ------
    AsmError
        At the first error, naming ``source:line:col``; no other exception escapes for any text.
    """
    asm = _Assembler(text, config, source)
    asm.pass1()
    words, lines = asm.pass2()
    return Assembled(tuple(words), ProgramImage(tuple(words), config.hash), dict(asm.labels),
                     dict(asm.constants), dict(asm.tensors), tuple(lines))


def assemble_file(path: str | os.PathLike, config) -> Assembled:
    """Assemble a source file (UTF-8; a byte-order mark is allowed).

    Raises
    ------
    AsmError
        For an assembly error, or a byte that is not UTF-8 (pointing at it).
    OSError
        When the file cannot be read.
    """
    blob = Path(path).read_bytes()
    try:
        text = blob.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line_start = blob.rfind(b"\n", 0, e.start) + 1
        line_end = blob.find(b"\n", e.start)
        shown = blob[line_start:line_end if line_end >= 0 else len(blob)].decode("utf-8", "replace")
        src = SourceLine(str(path), blob.count(b"\n", 0, e.start) + 1, shown.rstrip("\r"))
        raise src.error(len(blob[line_start:e.start].decode("utf-8", "replace")) + 1,
                        f"invalid UTF-8 byte {blob[e.start]:#04x}; source files must be UTF-8") from None
    return assemble(text, config, str(path))


def write_image(assembled: Assembled, out_path: str | os.PathLike) -> None:
    """Write the program image atomically.

    The bytes go to a temporary file in the destination folder, which then
    replaces ``out_path`` in one step (:func:`os.replace`): a reader sees the
    old file or the complete new one, never a partial one, and a failure
    leaves no temporary file behind.
    """
    out = Path(out_path)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(assembled.image.to_bytes())
        os.replace(tmp, out)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def assemble_to_file(path: str | os.PathLike, config, out_path: str | os.PathLike) -> Assembled:
    """Assemble ``path`` and write its image to ``out_path`` (what ``npuforge asm`` does).

    On an error nothing is written: a previous ``out_path`` is left untouched
    (it may still be the good image of an earlier version of the source; the
    error message says the assembly failed, and removing files the user did not
    ask to remove would be surprising), and no new or partial file appears.
    """
    assembled = assemble_file(path, config)
    write_image(assembled, out_path)
    return assembled
