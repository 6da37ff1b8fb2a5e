"""Fuzz the assembler: random and mutated text may only ever raise :class:`AsmError`.

Run as ``python -m npuforge.assembler.fuzz --count 100000 --seed 0``. Inputs are
random token soup, random characters, and valid programs (random instructions
of every opcode, constants, tensors, labels, raw words, written with varied
expressions) put through mutations: character and token deletion, insertion
and replacement, line swaps and duplicates, splices of two programs, huge
numbers, unicode, empty text, very long lines and deep nesting.

For every input, anything other than a clean result or an ``AsmError`` is a
crash; so is an ``AsmError`` pointing outside the text, and an assembled
program whose disassembly does not reassemble to the same words. Crashes are
printed with the input that caused them and the exit status is 1.

Inputs come from ``random.Random(seed)`` (per-character work is several times
faster than with a numpy Generator): the same seed gives the same inputs.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
import traceback
from dataclasses import dataclass, field

from ..config import DEFAULT_CONFIG, load_config
from ..isa.encoding import DEP_FLAGS, Instruction, format_instruction, operand_range
from ..isa.spec import INSTRUCTIONS, LEGAL_DEPS, NUM_REGS, WORD_BITS
from .asm import DIRECTIVES, AsmError, assemble
from .disasm import disassemble

__all__ = ["random_instruction", "random_program", "mutate", "fuzz_input", "fuzz", "FuzzResult", "main"]

_VOCAB = sorted({s.mnemonic for s in INSTRUCTIONS} | {o.name for s in INSTRUCTIONS for o in s.operands}
                | set(DEP_FLAGS) | set(DIRECTIVES)) + [
    f"r{i}" for i in range(NUM_REGS + 2)] + [
    "=", ",", ":", "+", "-", "*", "/", "<<", ">>", "(", ")", ";", "#", "0", "1", "-1", "0x", "0b", "0x_ff",
    "1_000", "__", "_", "label", "loop", "N", ".", "..", "\t", " ", "\n", "0xffffffff", "4294967296",
    "65536", "-2147483649", str(1 << 128), "1e3", "0o7", "'a'", '"', "\\", "$", "@", "%", "~"]
_UNICODE = ["é", "ß", "λ", "中", "🙂", "\u200b", "\ufeff", "\u2028", "\x00", "\x7f", "\ud800", "１", "٣", "ℕ"]


def _pick(rng: random.Random, lo: int, hi: int) -> int:
    """A value in lo..hi, biased to the edges, where encoders break."""
    r = rng.random()
    if r < 0.15:
        return lo
    if r < 0.3:
        return hi
    if r < 0.45 and lo <= 0 <= hi:
        return 0
    if r < 0.6:
        return rng.randint(max(lo, -16), min(hi, 16))
    return rng.randint(lo, hi)


def random_instruction(rng: random.Random) -> Instruction:
    """A random legal instruction of a random opcode; every operand given, ranges from the spec.

    Parameters
    ----------
    rng : random.Random
        The source of randomness (seeded by the caller).
    """
    spec = rng.choice(INSTRUCTIONS)
    args: dict[str, object] = {}
    for o in spec.operands:
        if o.kind == "flag":
            args[o.name] = rng.randint(0, 1)
        elif o.kind == "reg":
            args[o.name] = rng.randrange(NUM_REGS)
        elif o.kind in ("mem", "dram"):
            args[o.name] = (rng.randrange(NUM_REGS), _pick(rng, *operand_range(spec.op, o.name)))
        else:
            args[o.name] = _pick(rng, *operand_range(spec.op, o.name))
    legal = [f for f, ch in LEGAL_DEPS[spec.queue].items() if ch is not None]
    return Instruction(spec.op, args, frozenset(f for f in legal if rng.random() < 0.4))


def _expr(rng: random.Random, value: int, consts: dict[str, int]) -> str:
    """Text of an expression that evaluates to ``value``, in one of many spellings."""
    r = rng.random()
    if r < 0.35:
        return str(value)
    if r < 0.5:
        return hex(value)
    if r < 0.55:
        return ("-" if value < 0 else "") + "0b" + format(abs(value), "_b")
    if r < 0.6:
        return ("-" if value < 0 else "") + format(abs(value), "_")
    if r < 0.8 and consts:
        name = rng.choice(sorted(consts))
        return f"{name} + ({value - consts[name]})"
    if r < 0.9:
        return f"({value} * 4) / 4"
    return f"(({value} << 3) >> 3)"


def random_program(rng: random.Random, n: int = 8) -> str:
    """Valid assembly text: constants, a tensor, labels, about ``n`` random instructions, raw words."""
    lines = ["; random program", ""]
    consts = {}
    for i in range(rng.randint(0, 3)):
        name, value = f"C{i}", rng.randint(-1000, 1 << 20)
        lines.append(f".const {name} {_expr(rng, value, consts)}")
        consts[name] = value
    lines.append(f".tensor T_{rng.randint(0, 99)} {rng.randint(0, 4096):#x}")
    labels = [f"lab{i}" for i in range(rng.randint(1, min(3, n + 1)))]
    spots = sorted(rng.sample(range(n + 1), len(labels)))
    for i in range(n):
        for name, spot in zip(labels, spots):
            if spot == i:
                lines.append(f"{name}:")
        r = rng.random()
        if r < 0.1:
            lines.append(f"    .word {rng.getrandbits(WORD_BITS):#x}")
        elif r < 0.2:
            lines.append(f"    dbnz r{rng.randrange(NUM_REGS)}, {rng.choice(labels)}   # loop")
        else:
            instr = random_instruction(rng)
            if rng.random() < 0.5:
                lines.append("    " + format_instruction(instr))
            else:
                lines.append("    " + _spelled(rng, instr, consts))
    for name, spot in zip(labels, spots):
        if spot == n:
            lines.append(f"{name}:")
    lines.append("    halt")
    return "\n".join(lines) + "\n"


def _spelled(rng: random.Random, instr: Instruction, consts: dict[str, int]) -> str:
    """An instruction with expression operands, all name=value (positional for scalar ones)."""
    spec = instr.spec
    parts = []
    for o in spec.operands:
        value = instr.arg(o.name)
        if o.kind == "flag":
            if value:
                parts.append(o.name)
            continue
        if o.kind == "reg":
            text = f"r{value}"
        elif o.kind in ("mem", "dram"):
            reg, off = value
            text = f"r{reg}+{_expr(rng, off, consts)}" if reg else _expr(rng, off, consts)
        else:
            text = _expr(rng, value, consts)
        parts.append(text if spec.positional else f"{o.name}={text}")
    parts += sorted(instr.deps)
    mnemonic = spec.mnemonic.upper() if rng.random() < 0.2 else spec.mnemonic
    return mnemonic + (" " + ", ".join(parts) if parts else "")


def _random_text(rng: random.Random) -> str:
    r = rng.random()
    if r < 0.6:
        return "".join(rng.choice(_VOCAB) + rng.choice(["", " ", " ", ", ", "\n"]) for _ in range(rng.randint(0, 40)))
    if r < 0.9:
        return "".join(chr(rng.randint(9, 126)) for _ in range(rng.randint(0, 200)))
    return "".join(rng.choice(_UNICODE + _VOCAB) for _ in range(rng.randint(0, 30)))


def _huge(rng: random.Random) -> str:
    return rng.choice([
        "9" * rng.randint(20, 6000), "0x" + "f" * rng.randint(30, 3000), "0b" + "1" * rng.randint(120, 400),
        f"1 << {rng.randint(100, 10 ** 6)}", f"{1 << 127} * {1 << 127}", "-" * 200 + "1",
        "(" * rng.randint(50, 5000) + "1" + ")" * rng.randint(0, 5000), "1" + "+1" * rng.randint(100, 3000),
        str(-(1 << 128)), str((1 << 128) - 1), str(1 << 128), "1/0", "5/(3-3)", "1 >> -1", "-(1<<128)/-1"])


def mutate(text: str, rng: random.Random, other: str = "") -> str:
    """Apply one random mutation to ``text`` (``other`` is spliced in by the splice mutation)."""
    n = len(text)
    pos = rng.randint(0, n)
    kind = rng.randrange(13)
    if kind == 0:
        return text[:pos] + text[pos + rng.randint(1, 8):]
    if kind == 1:
        return text[:pos] + "".join(chr(rng.randint(32, 126)) for _ in range(rng.randint(1, 4))) + text[pos:]
    if kind == 2 and n:
        pos = min(pos, n - 1)
        return text[:pos] + chr(rng.randint(0, 0x7F)) + text[pos + 1:]
    if kind == 3:
        return text[:pos] + rng.choice(_VOCAB) + text[pos:]
    if kind == 4:       # delete or replace a word
        words = text.split(" ")
        i = rng.randrange(len(words))
        words[i] = rng.choice(["", rng.choice(_VOCAB)])
        return " ".join(words)
    if kind == 5:
        lines = text.split("\n")
        i, j = rng.randrange(len(lines)), rng.randrange(len(lines))
        lines[i], lines[j] = lines[j], lines[i]
        if rng.random() < 0.5:
            lines.insert(i, lines[j])
        return "\n".join(lines)
    if kind == 6:
        return text[:pos] + other[rng.randint(0, len(other)):]
    if kind == 7:
        return text[:pos] + _huge(rng) + text[pos:]
    if kind == 8:
        return text[:pos] + "".join(rng.choice(_UNICODE) for _ in range(rng.randint(1, 3))) + text[pos:]
    if kind == 9:
        return "" if rng.random() < 0.3 else text[:pos]
    if kind == 10:
        chunk = text[pos:pos + rng.randint(1, 60)] or "nop "
        return text[:pos] + chunk * rng.randint(50, 400) + text[pos:]
    if kind == 11:      # numbers one off the edge of their fields
        return text.replace("=0,", f"={rng.choice(['-1', '65536', '1<<24', '0x1_0000_0000'])},", 1)
    return text[:pos] + rng.choice(["\r", "\r\n", "\t", "\x0b", "\x0c", "\x1c", "\u2028"]) + text[pos:]


@dataclass
class FuzzResult:
    """Counts of one fuzz run, and the crashing inputs with their tracebacks."""
    inputs: int = 0
    assembled: int = 0
    rejected: int = 0
    crashes: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> str:
        return (f"fuzz: {self.inputs} inputs, {len(self.crashes)} crashes, {self.rejected} rejected with AsmError, "
                f"{self.assembled} assembled, {self.seconds:.1f} s")


def fuzz_input(rng: random.Random, corpus: list[str]) -> str:
    """One fuzz input: a fresh valid program, random text, or a mutated corpus program."""
    r = rng.random()
    if r < 0.15:
        return random_program(rng, rng.randint(0, 16))
    if r < 0.35:
        return _random_text(rng)
    text = rng.choice(corpus)
    for _ in range(rng.randint(1, 4)):
        text = mutate(text, rng, rng.choice(corpus))
    return text


def _check_one(text: str, config) -> str | None:
    """Assemble ``text``; returns "assembled" or "rejected", raises on a crash."""
    try:
        result = assemble(text, config, "<fuzz>")
    except AsmError as e:
        lines = text.split("\n")
        if not (1 <= e.line <= len(lines) and 1 <= e.col <= len(lines[e.line - 1]) + 1):
            raise AssertionError(f"error position {e.line}:{e.col} outside the input: {e.message}") from None
        str(e)
        return "rejected"
    again = assemble(disassemble(result.words), config, "<disassembly>").words
    if again != result.words:
        raise AssertionError("disassemble -> assemble changed the words")
    return "assembled"


def fuzz(count: int, seed: int, config=None, *, max_crashes: int = 20) -> FuzzResult:
    """Feed ``count`` generated inputs to the assembler.

    Parameters
    ----------
    count : int
        Number of inputs.
    seed : int
        Seed of the generator; the same seed gives the same inputs.
    config : HwConfig, optional
        Target config (default preset when None).
    max_crashes : int
        Stop collecting (not counting) crash details after this many.

    Returns
    -------
    FuzzResult
    """
    config = config or load_config(DEFAULT_CONFIG)
    rng = random.Random(seed)
    corpus = [random_program(rng, rng.randint(1, 12)) for _ in range(64)]
    result = FuzzResult()
    crashes = 0
    start = time.perf_counter()
    for _ in range(count):
        text = fuzz_input(rng, corpus)
        result.inputs += 1
        try:
            outcome = _check_one(text, config)
        except Exception:   # noqa: BLE001 - any escape is exactly what a fuzzer looks for
            crashes += 1
            if len(result.crashes) < max_crashes:
                result.crashes.append((text, traceback.format_exc()))
            continue
        if outcome == "assembled":
            result.assembled += 1
        else:
            result.rejected += 1
    result.seconds = time.perf_counter() - start
    if crashes > len(result.crashes):
        result.crashes += [("<not kept>", "")] * (crashes - len(result.crashes))
    return result


def main(argv=None) -> int:
    """Command line: run the fuzzer, print crashes and the summary; exit 1 on any crash."""
    p = argparse.ArgumentParser(prog="python -m npuforge.assembler.fuzz", description=__doc__.splitlines()[0])
    p.add_argument("--count", type=int, default=100_000, help="number of inputs (default 100000)")
    p.add_argument("--seed", type=int, default=0, help="generator seed (default 0)")
    p.add_argument("-c", "--config", default=DEFAULT_CONFIG, help="config preset or YAML path")
    p.add_argument("--show", type=int, default=5, help="crashes to print in full (default 5)")
    args = p.parse_args(argv)
    result = fuzz(args.count, args.seed, load_config(args.config))
    for text, tb in result.crashes[:args.show]:
        shown = repr(text) if len(text) <= 4000 else repr(text[:4000]) + f" ... ({len(text)} characters)"
        print(f"crash on input {shown}\n{tb}", file=sys.stderr)
    print(result.summary())
    return 1 if result.crashes else 0


if __name__ == "__main__":
    sys.exit(main())
