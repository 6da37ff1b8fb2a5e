"""Random programs for differential testing: legal ones with defined results, and illegal ones.

Every fidelity (reference simulator, RTL, the future cycle model) must give the same
final DRAM for a legal program and the same error code and instruction index for an
illegal one. :func:`random_program` makes either kind from a seed, deterministically.

Legal programs (``kind="legal"``) are built from *steps*. A step loads rows into fresh
scratchpad / accumulator rows, computes on them (``preload``, ``matmul``, vector ops,
``vquant``) and stores results into a fresh DRAM output region. Steps are ordered either
by the full token chain (load -> compute via L2C, compute -> store via C2S, the
compute/store of one step before the loads/compute of the next via C2L/S2C; both
channels are primed with one token at the start, so every step pops and pushes
the same way) or by ``fence``; some token steps run in a ``dbnz`` loop whose address
registers advance with ``addi``. Because steps touch disjoint rows and loads never read
what stores write (except after a ``fence``), no two units race; the caller may still
confirm it with ``refsim.run(..., check_races=True)``. Runs stay short (tens to a few
thousand cycles) unless ``size="long"``.

Illegal programs (:data:`ILLEGAL_CASES`) start like a legal one and contain one defect:
an unknown opcode, a reserved bit, an illegal dependency flag, each address-range case,
a branch or fetch outside the instruction memory, or a deadlock (a pop that no push
feeds, with or without a full queue, or pushes that overflow a token channel).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..assembler.builder import ProgramBuilder
from ..isa.encoding import Instruction, encode, operand_range
from ..isa.spec import BY_OPCODE, LEGAL_DEPS, WORD_BITS, ErrorCode, Header, Opcode

__all__ = ["RandomProgram", "random_program", "random_programs", "ILLEGAL_CASES", "reserved_mask",
           "small_matmul_program"]

ILLEGAL_CASES = {
    "opcode": ErrorCode.ILLEGAL_INSTR,
    "reserved_bit": ErrorCode.ILLEGAL_INSTR,
    "dep_flag": ErrorCode.ILLEGAL_INSTR,
    "spad_range": ErrorCode.ADDR_RANGE,
    "acc_range": ErrorCode.ADDR_RANGE,
    "preload_range": ErrorCode.ADDR_RANGE,
    "len_range": ErrorCode.ADDR_RANGE,
    "dram_range": ErrorCode.ADDR_RANGE,
    "branch_range": ErrorCode.PC_RANGE,
    "fetch_range": ErrorCode.PC_RANGE,
    "deadlock_pop": ErrorCode.DEADLOCK,
    "deadlock_full_queue": ErrorCode.DEADLOCK,
    "deadlock_push": ErrorCode.DEADLOCK,
}

_LOADS = ("load.sp", "load.acc8", "load.acc32")
_STORES = ("store.acc32", "store.acc8", "store.sp")
_VECTOR = ("vadd", "vmax", "vrelu", "vquant")
_R_IN, _R_OUT, _R_Q, _R_LOOP = 1, 2, 3, 4     # registers with fixed roles (7 and 8: illegal cases)


@dataclass(frozen=True)
class RandomProgram:
    """A generated program, its initial DRAM, and what it is meant to do."""
    words: tuple[int, ...]
    dram: np.ndarray            # uint8, trimmed after the last non-zero input byte
    kind: str                   # "legal" or a key of ILLEGAL_CASES
    expected_error: ErrorCode   # NONE for legal programs
    seed: int
    text: str                   # assembly listing (illegal raw words appear as comments)


def reserved_mask(op: Opcode) -> int:
    """Bits of the 128-bit word that ``op`` does not use (setting any is ILLEGAL_INSTR)."""
    spec = BY_OPCODE[op]
    args = {}
    for o in spec.operands:
        if o.kind in ("mem", "dram"):
            args[o.name] = (15, operand_range(op, o.name)[1])
        elif o.kind == "reg":
            args[o.name] = 15
        elif o.kind == "flag":
            args[o.name] = 1
        elif o.kind in ("int", "target"):
            args[o.name] = -1
        else:
            args[o.name] = operand_range(op, o.name)[1]
    deps = [f for f, ch in LEGAL_DEPS[spec.queue].items() if ch is not None]
    used = encode(Instruction(op, args, frozenset(deps)))
    header = (1 << Header.as_shape().size) - 1        # opcode and flags are never reserved
    return ((1 << WORD_BITS) - 1) & ~used & ~header


class _Gen:
    """State of one legal program under construction: allocators, register values, tokens."""

    def __init__(self, config, rng: np.random.Generator, size: str):
        self.c, self.rng, self.size = config, rng, size
        self.b = ProgramBuilder(config)
        self.in_bytes = 4096 if size == "short" else 65536
        self.out_bytes = 8 * self.in_bytes
        # Inputs sit at a random place in DRAM (high addresses too); outputs follow them.
        room = config.dram_bytes - self.in_bytes - 4096 - self.out_bytes
        # Mostly low addresses, which keeps the DRAM images of big batches small.
        if rng.random() < 0.75:
            room = min(room, 1 << 20)
        self.in_base = int(rng.integers(0, max(1, room // 64))) * 64
        self.out_base = self.in_base + self.in_bytes + 4096
        self.out_next = self.sp_next = self.acc_next = 0
        self.regs = {_R_IN: 0, _R_OUT: 0}

    def r(self, lo, hi):
        return int(self.rng.integers(lo, hi + 1))

    def seti(self, reg, value):
        self.b.emit("seti", rd=reg, imm=value)
        self.regs[reg] = value

    # ---- allocation: every step gets fresh rows and a fresh output region ------------------
    def fence_all(self):
        """Reusing rows or output bytes needs every earlier access finished: a fence orders it."""
        self.b.emit("fence")
        self.out_next = self.sp_next = self.acc_next = 0

    def rows(self, kind: str, n: int) -> int:
        limit = self.c.spad_rows if kind == "sp" else self.c.acc_rows
        if (self.sp_next if kind == "sp" else self.acc_next) + n > limit:
            self.fence_all()
        first = self.sp_next if kind == "sp" else self.acc_next
        if kind == "sp":
            self.sp_next += n
        else:
            self.acc_next += n
        return first

    def out_region(self, nbytes: int) -> int:
        if self.out_next + nbytes > self.out_bytes:
            self.fence_all()
        a = self.out_base + self.out_next
        self.out_next += (nbytes + 15) // 16 * 16
        return a

    def dram_operand(self, reg, address):
        """``(reg, off)`` for an absolute address; r0 with the absolute offset now and then."""
        if self.rng.random() < 0.15 or address - self.regs[reg] < 0:
            return (0, address)
        return (reg, address - self.regs[reg])

    # ---- instructions -------------------------------------------------------------------
    def load(self, deps, in_loop):
        c = self.c
        mn = "load.sp" if in_loop else str(self.rng.choice(_LOADS))
        nrows = self.r(1, 2 * c.rows)
        if mn == "load.sp":
            length, elem, kind = self.r(0, c.spad_row_bytes), 1, "sp"
        else:
            length, elem, kind = self.r(0, c.cols), 4 if mn == "load.acc32" else 1, "acc"
        stride = self.r(0, 3) if self.rng.random() < 0.2 else self.r(length * elem, length * elem + 40)
        first = self.rows(kind, nrows)
        span = (nrows - 1) * stride + length * elem
        address = self.regs[_R_IN] + self.r(0, max(0, self.in_avail - span))
        mem = {"sp": first} if kind == "sp" else {"acc": first}
        self.b.emit(mn, deps=deps, dram=self.dram_operand(_R_IN, address), rows=nrows, len=length,
                    stride=stride, **mem)
        return kind, first, nrows

    def compute(self, deps, loaded):
        """A matmul (perhaps after a preload) or a vector op; the first instruction takes the pops."""
        c = self.c
        pops = [d for d in deps if d.startswith("pop")]
        pushes = [d for d in deps if d.startswith("push")]
        sp_rows = [(f, n) for k, f, n in loaded if k == "sp"]
        if sp_rows and self.rng.random() < 0.65:
            f, n = sp_rows[self.r(0, len(sp_rows) - 1)]
            if self.rng.random() < 0.7:
                self.b.emit("preload", sp=f if n >= c.rows else self.rows("sp", c.rows), deps=pops)
                deps = pushes
            dst = self.rows("acc", n)
            self.b.emit("matmul", deps=deps, acc=dst, sp=f, rows=n, accumulate=bool(self.rng.random() < 0.3))
            return dst, n
        acc_rows = [(f, n) for k, f, n in loaded if k == "acc"] or [(self.rows("acc", 4), 4)]
        f, n = acc_rows[self.r(0, len(acc_rows) - 1)]
        mn = str(self.rng.choice(_VECTOR))
        dst = f if self.rng.random() < 0.5 else self.rows("acc", n)
        q = {}
        if mn == "vquant":
            q = dict(qreg=_R_Q, shift=self.r(0, 40), zp=self.r(-128, 127), relu=bool(self.rng.random() < 0.5))
        if mn != "vquant" or self.rng.random() < 0.6:
            self.b.emit(mn, deps=deps, dst=dst, src=f, rows=n, **q)
            return dst, n
        # A second vector op right behind the VQUANT that reads what it wrote (the bubble of vector_stages: 2):
        # the same rows shifted by one (each row reads the one just written), or the last row again.
        self.b.emit(mn, deps=pops, dst=dst, src=f, rows=n, **q)
        if n > 1 and self.rng.random() < 0.5:
            self.b.emit("vquant", deps=pushes, dst=dst + 1, src=dst, rows=n - 1, **q)
        else:
            mn2 = str(self.rng.choice(_VECTOR))
            self.b.emit(mn2, deps=pushes, dst=dst + n - 1, src=dst + n - 1, rows=1, **(q if mn2 == "vquant" else {}))
        return dst, n

    def store(self, deps, acc_first, acc_n, loaded, in_loop):
        c = self.c
        sp = [(f, n) for k, f, n in loaded if k == "sp"]
        mn = str(self.rng.choice(_STORES[:2] if in_loop or not sp else _STORES))
        q = {}
        if mn == "store.sp":
            first, n = sp[self.r(0, len(sp) - 1)]
            length, elem = self.r(1, c.spad_row_bytes), 1
        else:
            first, n = acc_first, acc_n
            length, elem = self.r(1, c.cols), 4 if mn == "store.acc32" else 1
            if mn == "store.acc8":
                q = dict(qreg=_R_Q, shift=self.r(0, 40), zp=self.r(-128, 127), relu=bool(self.rng.random() < 0.5))
        stride = length * elem + self.r(0, 8)
        address = self.out_region((n - 1) * stride + length * elem)
        mem = {"sp": first} if mn == "store.sp" else {"acc": first}
        self.b.emit(mn, deps=deps, dram=self.dram_operand(_R_OUT, address), rows=n, len=length, stride=stride,
                    **mem, **q)

    def step(self, mode: str, in_loop: bool = False):
        """One load/compute/store step, ordered by tokens or by fences."""
        tok = mode == "tokens"
        nload = self.r(1, 3)
        loaded = []
        for i in range(nload):
            deps = (["pop_next"] if tok and i == 0 else []) + (["push_next"] if tok and i == nload - 1 else [])
            loaded.append(self.load(deps, in_loop))
        if not tok:
            self.b.emit("fence")
        ncomp = self.r(1, 2)
        outs = []
        for i in range(ncomp):
            deps = (["pop_prev", "pop_next"] if tok and i == 0 else []) + \
                   (["push_prev", "push_next"] if tok and i == ncomp - 1 else [])
            outs.append(self.compute(deps, loaded))
        if not tok:
            self.b.emit("fence")
        nstore = self.r(1, 2)
        for i in range(nstore):
            deps = (["pop_prev"] if tok and i == 0 else []) + (["push_prev"] if tok and i == nstore - 1 else [])
            f, n = outs[self.r(0, len(outs) - 1)]
            self.store(deps, f, n, loaded, in_loop)
        if not tok:
            self.b.emit("fence")

    def prologue(self):
        self.seti(_R_IN, self.in_base)
        self.seti(_R_OUT, self.out_base)
        self.in_avail = self.in_bytes
        self.seti(_R_Q, self.r(-(1 << 31), (1 << 31) - 1) if self.rng.random() < 0.3 else self.r(1, 1 << 16))
        # One token on C2L and S2C, so that every token step pops and pushes them alike.
        self.b.emit("vrelu", dst=0, src=0, rows=0, deps=["push_prev"])
        self.b.emit("store.acc32", dram=0, acc=0, rows=0, len=0, stride=0, deps=["push_prev"])
        if self.rng.random() < 0.3:
            self.b.emit("nop")

    def loop(self):
        """A token step repeated by dbnz, its input and output addresses advancing by addi.

        Iterations reuse the same rows; the token chain orders them, except that the next
        iteration's loads could overtake this iteration's stores: so the body loads only the
        scratchpad and stores only the accumulator.
        """
        iters = self.r(2, 3)
        self.fence_all()
        in_step = self.r(0, 8) * 16
        self.in_avail = self.in_bytes - (iters - 1) * in_step
        self.seti(_R_LOOP, iters)
        label = f"loop{len(self.b)}"
        self.b.label(label)
        self.step("tokens", in_loop=True)
        out_step = (self.out_next + 255) // 256 * 256
        self.b.emit("addi", rd=_R_IN, rs=_R_IN, imm=in_step)
        self.b.emit("addi", rd=_R_OUT, rs=_R_OUT, imm=out_step)
        self.b.emit("dbnz", rd=_R_LOOP, target=label)
        self.out_next = iters * out_step
        self.seti(_R_IN, self.in_base)
        self.seti(_R_OUT, self.out_base)
        self.in_avail = self.in_bytes


def _legal_builder(config, rng, size):
    g = _Gen(config, rng, size)
    g.prologue()
    nsteps = g.r(1, 4) if size == "short" else g.r(8, 24)
    for _ in range(nsteps):
        x = g.rng.random()
        if x < 0.2:
            g.loop()
        elif x < 0.35:
            g.step("fence")
        else:
            g.step("tokens")
    return g


def _dram_image(g, rng) -> np.ndarray:
    """Random input bytes (and 4 KiB after them, which out-of-range reads may touch)."""
    img = np.zeros(g.in_base + g.in_bytes + 4096, dtype=np.uint8)
    img[g.in_base:] = rng.integers(0, 256, g.in_bytes + 4096, dtype=np.uint8)
    return img


def random_program(config, seed: int, kind: str = "legal", size: str = "short") -> RandomProgram:
    """Make one random program from a seed.

    Parameters
    ----------
    config : HwConfig
    seed : int
        Same seed, config, kind and size give the same program and DRAM bytes.
    kind : str
        ``"legal"`` or a key of :data:`ILLEGAL_CASES`.
    size : str
        ``"short"`` (CI: a few steps) or ``"long"``.

    Returns
    -------
    RandomProgram

    Raises
    ------
    ValueError
        For an unknown kind or size.
    """
    if kind != "legal" and kind not in ILLEGAL_CASES:
        raise ValueError(f"kind must be 'legal' or one of {', '.join(ILLEGAL_CASES)}, not {kind!r}")
    if size not in ("short", "long"):
        raise ValueError(f"size must be 'short' or 'long', not {size!r}")
    rng = np.random.default_rng([seed, list(ILLEGAL_CASES).index(kind) + 1 if kind != "legal" else 0])
    g = _legal_builder(config, rng, size)
    if kind == "legal":
        g.b.emit("halt")
        words, text = g.b.words(), g.b.text()
    else:
        from .randprog_illegal import inject
        words, text = inject(g, kind)
    data_rng = np.random.default_rng([seed, 1 << 20])
    return RandomProgram(tuple(words), _dram_image(g, data_rng), kind, ILLEGAL_CASES.get(kind, ErrorCode.NONE),
                         seed, text)


def random_programs(config, count: int, seed: int = 0, *, illegal_fraction: float = 0.25,
                    size: str = "short"):
    """``count`` programs from consecutive seeds; about ``illegal_fraction`` of them illegal,
    cycling through every illegal case.

    Yields
    ------
    RandomProgram
    """
    cases = list(ILLEGAL_CASES)
    every = max(1, round(1 / illegal_fraction)) if illegal_fraction > 0 else 0
    for i in range(count):
        kind = cases[(i // every) % len(cases)] if every and i % every == every - 1 else "legal"
        yield random_program(config, seed + i, kind, size)


def small_matmul_program(config) -> tuple[int, ...]:
    """A fixed short program on every unit: weights, preload, 3 x rows activation rows, matmul, int32 store.

    The tests of the RTL engines and of the activity counters run it (DRAM image of their
    choice: it reads 0x100.. and 0x2000.., writes from 0x9000).
    """
    b = ProgramBuilder(config)
    r = config.rows
    b.emit("load.sp", sp=0, dram=0x100, rows=r, len=config.cols, stride=64, deps=["push_next"])
    b.emit("preload", sp=0, deps=["pop_prev"])
    b.emit("load.sp", sp=64, dram=0x2000, rows=3 * r, len=r, stride=32, deps=["push_next"])
    b.emit("matmul", acc=0, sp=64, rows=3 * r, deps=["pop_prev", "push_next"])
    b.emit("store.acc32", dram=0x9000, acc=0, rows=3 * r, len=config.cols, stride=4 * config.cols,
           deps=["pop_prev"])
    b.emit("halt")
    return b.words()
