"""The illegal programs of :mod:`.randprog`: a legal prefix, then one defect, then ``halt``.

Each case of :data:`~npuforge.cosim.randprog.ILLEGAL_CASES` is made here. The defect is
the first thing that goes wrong: the prefix is legal and leaves the token channels at
L2C = C2S = 0 and C2L = S2C = 1 (the prefix primes those two and every step is balanced).
"""

from __future__ import annotations

from ..isa.encoding import Instruction, encode, field_slice
from ..isa.spec import BY_MNEMONIC, LEGAL_DEPS, Header, Opcode, Queue
from .randprog import reserved_mask

__all__ = ["inject"]

_R_BAD = 7      # register that holds an out-of-range base
_R_CNT = 8      # branch counter


def _raw(g, word: int, note: str):
    """Append a raw word (the builder refuses illegal ones): returns (words, text)."""
    words = g.b.words() + [word]
    g.b.comment(f"instruction {len(words) - 1}: raw word {word:#034x} ({note})")
    return words + [encode(Instruction(Opcode.HALT))], g.b.text() + "    halt\n"


def _finish(g):
    g.b.emit("halt")
    return g.b.words(), g.b.text()


def _addr_case(g, kind: str):
    c, b, r = g.c, g.b, g.r
    n = r(1, 2 * c.rows)
    if kind == "spad_range":
        g.seti(_R_BAD, c.spad_rows - r(0, n - 1))
        mn = str(g.rng.choice(["load.sp", "matmul", "store.sp"]))
        if mn == "load.sp":
            b.emit(mn, sp=(_R_BAD, 0), dram=0, rows=n, len=1, stride=1)
        elif mn == "matmul":
            b.emit(mn, acc=0, sp=(_R_BAD, 0), rows=n)
        else:
            b.emit(mn, sp=(_R_BAD, 0), dram=0, rows=n, len=1, stride=1)
    elif kind == "acc_range":
        g.seti(_R_BAD, c.acc_rows - r(0, n - 1) if g.rng.random() < 0.8 else -r(1, 100))
        mn = str(g.rng.choice(["load.acc32", "matmul", "vadd", "vrelu", "store.acc8"]))
        if mn.startswith("load"):
            b.emit(mn, acc=(_R_BAD, 0), dram=0, rows=n, len=1, stride=4)
        elif mn == "matmul":
            b.emit(mn, acc=(_R_BAD, 0), sp=0, rows=n)
        elif mn == "store.acc8":
            b.emit(mn, acc=(_R_BAD, 0), dram=0, rows=n, len=1, stride=1, qreg=0)
        else:
            b.emit(mn, dst=0, src=(_R_BAD, 0), rows=n) if g.rng.random() < 0.5 else \
                b.emit(mn, dst=(_R_BAD, 0), src=0, rows=n)
    elif kind == "preload_range":
        g.seti(_R_BAD, c.spad_rows - r(1, c.rows - 1))
        b.emit("preload", sp=(_R_BAD, 0))
    elif kind == "len_range":
        mn = str(g.rng.choice(["load.sp", "load.acc8", "store.acc32", "store.sp"]))
        limit = c.spad_row_bytes if mn.endswith(".sp") else c.cols
        length = r(limit + 1, 255)
        mem = {"sp": 0} if mn.endswith(".sp") else {"acc": 0}
        b.emit(mn, dram=0, rows=r(1, 4), len=length, stride=256, **mem)
    elif kind == "dram_range":
        length, nrows = r(1, c.cols), r(1, 4)
        mn = str(g.rng.choice(["load.acc32", "load.sp", "store.acc8"]))
        elem = 4 if mn == "load.acc32" else 1
        if g.rng.random() < 0.7:
            stride = r(length * elem, length * elem + 64)
            span = (nrows - 1) * stride + length * elem
            g.seti(_R_BAD, c.dram_bytes - span + r(1, length * elem))     # the last row ends past DRAM
        else:
            stride = r(0, 64)
            g.seti(_R_BAD, -r(1, 1 << 20))          # wraps modulo 2**32 to a huge address
        extra = {"qreg": 0} if mn == "store.acc8" else {}
        mem = {"sp": 0} if mn.endswith(".sp") else {"acc": 0}
        b.emit(mn, dram=(_R_BAD, 0), rows=nrows, len=length, stride=stride, **mem, **extra)
    return _finish(g)


def inject(g, kind: str):
    """Finish the legal prefix in ``g`` (a ``randprog._Gen``) with the defect ``kind``.

    Returns
    -------
    (list of int, str)
        The words and an assembly listing.
    """
    c, b, r, rng = g.c, g.b, g.r, g.rng
    if kind == "opcode":
        valid = {op.value for op in Opcode}
        bad = [v for v in range(64) if v not in valid]
        op = int(rng.choice(bad))
        word = op | (int(rng.integers(0, 1 << 60)) << 10 if rng.random() < 0.5 else 0)
        return _raw(g, word, f"unknown opcode {op}")
    if kind == "reserved_bit":
        op = Opcode(int(rng.choice([o.value for o in Opcode])))
        mask = reserved_mask(op)
        bits = [i for i in range(128) if mask >> i & 1]
        bit = int(rng.choice(bits))
        base = encode(Instruction(op, _minimal_args(op)))
        return _raw(g, base | 1 << bit, f"{op.name} with reserved bit {bit}")
    if kind == "dep_flag":
        choices = [(s.op, f) for s in BY_MNEMONIC.values() for f, ch in LEGAL_DEPS[s.queue].items() if ch is None]
        op, flag = choices[int(rng.integers(0, len(choices)))]
        word = encode(Instruction(op, _minimal_args(op))) | field_slice(Header, flag).put(1)
        return _raw(g, word, f"{op.name} with illegal flag {flag}")
    if kind in ("spad_range", "acc_range", "preload_range", "len_range", "dram_range"):
        return _addr_case(g, kind)
    if kind == "branch_range":
        g.seti(_R_CNT, r(2, 5))
        target = c.imem_words + r(0, 1000) if rng.random() < 0.7 else -r(1, 1000)
        b.emit("dbnz", rd=_R_CNT, target=target)
        return _finish(g)
    if kind == "fetch_range":
        # Jump to the last word of the instruction memory, a nop: the next fetch is outside.
        g.seti(_R_CNT, 2)
        b.emit("dbnz", rd=_R_CNT, target=c.imem_words - 1)
        words = b.words()
        words += [0] * (c.imem_words - 1 - len(words)) + [encode(Instruction(Opcode.NOP))]
        return words, b.text() + f"    ; zero words up to {c.imem_words - 2}, then nop at {c.imem_words - 1}\n"
    if kind == "deadlock_pop":
        _blocked(g)
        if rng.random() < 0.3:
            b.emit("fence")
        for _ in range(r(0, 3)):
            b.emit("store.acc32", dram=0, acc=0, rows=0, len=0, stride=0)
        return _finish(g)
    if kind == "deadlock_full_queue":
        mn = _blocked(g)
        queue = BY_MNEMONIC[mn].queue
        filler = {Queue.LOAD: ("load.sp", dict(sp=0, dram=0, rows=0, len=0, stride=0)),
                  Queue.COMPUTE: ("vrelu", dict(dst=0, src=0, rows=0)),
                  Queue.STORE: ("store.acc32", dict(dram=0, acc=0, rows=0, len=0, stride=0))}[queue]
        for _ in range(c.queue_depth + r(1, 3)):
            b.emit(filler[0], **filler[1])
        return _finish(g)
    if kind == "deadlock_push":
        # L2C is 0 after the prefix and nothing pops it: the (token_depth + 1)-th push waits forever.
        for _ in range(c.token_depth + 1):
            b.emit("load.sp", sp=0, dram=0, rows=0, len=0, stride=0, deps=["push_next"])
        return _finish(g)
    raise ValueError(f"unknown illegal case {kind!r}")


def _blocked(g) -> str:
    """Emit an instruction that pops a channel nothing will ever feed; returns its mnemonic."""
    which = int(g.rng.integers(0, 3))
    if which == 0:
        g.b.emit("vrelu", dst=0, src=0, rows=0, deps=["pop_prev"])               # L2C is 0
        return "vrelu"
    if which == 1:
        g.b.emit("store.acc32", dram=0, acc=0, rows=0, len=0, stride=0, deps=["pop_prev"])   # C2S is 0
        return "store.acc32"
    g.b.emit("load.sp", sp=0, dram=0, rows=0, len=0, stride=0, deps=["pop_next"])   # takes the primed C2L
    g.b.emit("load.sp", sp=0, dram=0, rows=0, len=0, stride=0, deps=["pop_next"])   # nothing left
    return "load.sp"


def _minimal_args(op: Opcode) -> dict:
    spec = BY_MNEMONIC[next(s.mnemonic for s in BY_MNEMONIC.values() if s.op == op)]
    args = {}
    for o in spec.operands:
        if o.required:
            args[o.name] = (0, 0) if o.kind in ("mem", "dram") else 0
    return args
