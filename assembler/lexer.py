"""Tokens and constant expressions of the assembly language.

A line is cut at its first ``;`` or ``#`` (there are no string literals, so a
comment character never appears inside a token), then split into tokens:
numbers, names (identifiers, mnemonics like ``load.sp`` and directives like
``.const``) and punctuation. Expressions are integer-valued and evaluated while
they are parsed; precedence follows C: unary ``-``/``+``, then ``*`` ``/``
(``/`` is floor division), then ``+`` ``-``, then ``<<`` ``>>``.

Values are bounded (``-2**128 .. 2**128-1``, shift counts ``0..128``, nesting
64 deep) so that no input, however hostile, makes the assembler run out of time,
memory or stack: it can only ever raise :class:`~.errors.AsmError`.
"""

from __future__ import annotations

import re
from typing import Callable, NamedTuple

from .errors import SourceLine

__all__ = ["Token", "tokenize", "strip_comment", "parse_number", "eval_expr", "VALUE_MIN", "VALUE_MAX",
           "IDENT_RE", "REGISTER_RE", "MAX_DEPTH"]

VALUE_MIN = -(1 << 128)
VALUE_MAX = (1 << 128) - 1
MAX_SHIFT = 128
MAX_DEPTH = 64

IDENT_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
REGISTER_RE = re.compile(r"[rR]([0-9]+)")

# Every character falls in exactly one group, so a token's column is the sum of the lengths before it
# (findall with a running position is about twice as fast as finditer and Match objects).
_TOKEN_RE = re.compile(r"""
    ([ \t\r\f\v]+)                  # blanks
  | ([0-9][0-9A-Za-z_]*)            # number; greedy, so that '12ab' is one bad literal, not '12' 'ab'
  | ([A-Za-z_.][A-Za-z0-9_.]*)      # name: symbol, register, mnemonic, directive
  | (<<|>>|[-+*/(),=:])             # punctuation
  | (.)                             # anything else is an error
""", re.VERBOSE | re.DOTALL)

_DEC_RE = re.compile(r"[0-9]+(?:_[0-9]+)*")
_HEX_RE = re.compile(r"0[xX]_?[0-9a-fA-F]+(?:_[0-9a-fA-F]+)*")
_BIN_RE = re.compile(r"0[bB]_?[01]+(?:_[01]+)*")
# More digits than any in-range literal has (128 binary digits; the range check after
# conversion catches the rest). Checked before int() so that a 100,000-digit literal costs
# nothing and never hits Python's limit on int-from-string conversion.
_MAX_LITERAL_DIGITS = 130


class Token(NamedTuple):
    kind: str       # "num", "name" or "op"
    text: str
    col: int        # 1-based


def strip_comment(text: str) -> str:
    """The code part of a line: everything before the first ``;`` or ``#``."""
    cut = len(text)
    for ch in ";#":
        i = text.find(ch)
        if 0 <= i < cut:
            cut = i
    return text[:cut]


def tokenize(code: str, src: SourceLine) -> list[Token]:
    """Split the code part of a line into tokens.

    Raises
    ------
    AsmError
        At the first character that cannot start a token.
    """
    out = []
    pos = 1
    new = tuple.__new__
    for blank, num, name, op, bad in _TOKEN_RE.findall(code):
        if blank:
            pos += len(blank)
            continue
        if num:
            out.append(new(Token, ("num", num, pos)))
            pos += len(num)
        elif name:
            out.append(new(Token, ("name", name, pos)))
            pos += len(name)
        elif op:
            out.append(new(Token, ("op", op, pos)))
            pos += len(op)
        else:
            raise src.error(pos, f"unexpected character {bad!r}")
    return out


def parse_number(tok: Token, src: SourceLine) -> int:
    """The value of a number token: decimal, ``0x`` hex or ``0b`` binary, single ``_`` between digits."""
    text = tok.text
    if text.isdigit() and len(text) < 39:   # plain decimal below 10**38 < 2**128: the common case
        return int(text)
    head = text[:2].lower()
    shown = text if len(text) <= 40 else text[:20] + "..."
    if head == "0x":
        regex, base, body = _HEX_RE, 16, text[2:]
        what = f"bad hex literal '{shown}': expected hex digits 0-9, a-f after 0x"
    elif head == "0b":
        regex, base, body = _BIN_RE, 2, text[2:]
        what = f"bad binary literal '{shown}': expected binary digits 0, 1 after 0b"
    else:
        regex, base, body = _DEC_RE, 10, text
        what = f"bad number literal '{shown}': expected decimal digits, 0x.. hex or 0b.. binary"
    if not regex.fullmatch(text):
        raise src.error(tok.col, what + " (a single '_' may separate digits)")
    too_large = f"number literal '{shown}' is too large: values are limited to -2**128..2**128-1"
    if len(body) - body.count("_") > _MAX_LITERAL_DIGITS:
        raise src.error(tok.col, too_large)
    value = int(body.replace("_", ""), base)
    if value > VALUE_MAX:
        raise src.error(tok.col, too_large)
    return value


class _Parser:
    """Recursive-descent evaluator over ``toks[pos:end]``."""

    def __init__(self, toks, pos, end, src, lookup, end_col):
        self.toks, self.pos, self.end, self.src, self.lookup = toks, pos, end, src, lookup
        self.end_col = end_col
        self.depth = 0

    def peek(self) -> Token | None:
        return self.toks[self.pos] if self.pos < self.end else None

    def _col(self) -> int:
        tok = self.peek()
        return tok.col if tok else self.end_col

    def _bounded(self, value: int, tok: Token) -> int:
        if not VALUE_MIN <= value <= VALUE_MAX:
            raise self.src.error(tok.col, f"value out of range after '{tok.text}': expressions are limited "
                                          f"to -2**128..2**128-1")
        return value

    def expr(self) -> int:
        value = self.additive()
        while (tok := self.peek()) is not None and tok.text in ("<<", ">>"):
            self.pos += 1
            count = self.additive()
            if not 0 <= count <= MAX_SHIFT:
                raise self.src.error(tok.col, f"shift count must be in 0..{MAX_SHIFT}, got {count}")
            value = self._bounded(value << count if tok.text == "<<" else value >> count, tok)
        return value

    def additive(self) -> int:
        value = self.term()
        while (tok := self.peek()) is not None and tok.text in ("+", "-"):
            self.pos += 1
            rhs = self.term()
            value = self._bounded(value + rhs if tok.text == "+" else value - rhs, tok)
        return value

    def term(self) -> int:
        value = self.unary()
        while (tok := self.peek()) is not None and tok.text in ("*", "/"):
            self.pos += 1
            rhs = self.unary()
            if tok.text == "*":
                value = self._bounded(value * rhs, tok)
            elif rhs == 0:
                raise self.src.error(tok.col, "division by zero")
            else:
                value = self._bounded(value // rhs, tok)
        return value

    def unary(self) -> int:
        tok = self.peek()
        if tok is not None and tok.text in ("-", "+"):
            self.pos += 1
            self._enter(tok)
            value = self.unary()
            self.depth -= 1
            return self._bounded(-value if tok.text == "-" else value, tok)
        return self.atom()

    def _enter(self, tok: Token) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.src.error(tok.col, f"expression nested too deeply (more than {MAX_DEPTH} levels)")

    def atom(self) -> int:
        tok = self.peek()
        if tok is None:
            raise self.src.error(self.end_col, "expected a number, a name or '(', got end of operand")
        self.pos += 1
        if tok.kind == "num":
            return parse_number(tok, self.src)
        if tok.kind == "name":
            if REGISTER_RE.fullmatch(tok.text):
                raise self.src.error(tok.col, f"register '{tok.text}' cannot appear in an expression; "
                                              f"registers only start an address (rN or rN+offset)")
            if not IDENT_RE.fullmatch(tok.text):
                raise self.src.error(tok.col, f"expected a number or a symbol name, got '{tok.text}'")
            return self.lookup(tok)
        if tok.text == "(":
            self._enter(tok)
            value = self.expr()
            close = self.peek()
            if close is None or close.text != ")":
                raise self.src.error(self._col(), f"expected ')' to close the '(' at column {tok.col}"
                                                  + (f", got '{close.text}'" if close else ""))
            self.pos += 1
            self.depth -= 1
            return value
        raise self.src.error(tok.col, f"expected a number, a name or '(', got '{tok.text}'")


def eval_expr(toks: list[Token], pos: int, end: int, src: SourceLine,
              lookup: Callable[[Token], int], end_col: int) -> int:
    """Evaluate the expression ``toks[pos:end]``, which must be consumed entirely.

    Parameters
    ----------
    toks, pos, end
        The tokens and the slice holding the expression.
    src
        The line, for error positions.
    lookup
        Value of a symbol token; raises :class:`AsmError` for an undefined one.
    end_col
        Column reported when the expression ends too early.

    Raises
    ------
    AsmError
        For a bad literal, an undefined symbol, division by zero, an out-of-range
        value or shift, too deep nesting, or tokens left after the expression.
    """
    if pos >= end:
        raise src.error(end_col, "expected an expression")
    p = _Parser(toks, pos, end, src, lookup, end_col)
    value = p.expr()
    if p.pos < end:
        tok = toks[p.pos]
        raise src.error(tok.col, f"unexpected '{tok.text}' after an expression; expected an operator, "
                                 f"',' or the end of the line")
    return value
