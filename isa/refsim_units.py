"""Per-instruction semantics of the reference simulator: dispatch-time resolution and checks,
and the numpy execution of each queued instruction.

:func:`prepare` turns a decoded instruction into a :class:`Prepared` once per
instruction index; at dispatch, :meth:`Prepared.resolve` reads the registers,
checks every address (``ADDR_RANGE`` of isa/execution.py) and gives a
:class:`Cmd` with absolute values, which the unit later runs with
:data:`EXECUTE`. Every execution is vectorised over rows and elements; the only
Python loops are for the rare overlapping cases whose sequential
``for i in 0..rows-1`` meaning differs from a one-shot numpy assignment.
"""

from __future__ import annotations

import numpy as np

from .encoding import DecodeError, Instruction, decode
from .semantics import requant
from .spec import BY_OPCODE, INSTRUCTIONS, LEGAL_DEPS, Dep, Opcode, Queue

__all__ = ["Machine", "Cmd", "Prepared", "AddrRangeError", "prepare", "decode_entry", "SCALAR_OPS", "EXECUTE",
           "CHANNEL_INDEX",
           "UNIT_INDEX"]

MASK32 = 0xFFFFFFFF
CHANNEL_INDEX = {ch: i for i, ch in enumerate(Dep)}            # token counters, in Dep order
UNIT_INDEX = {Queue.LOAD: 0, Queue.COMPUTE: 1, Queue.STORE: 2}  # the three units

# Bytes of one DRAM element, which on-chip memory a DMA instruction addresses, and whether it
# stores: all read off the ISA declaration.
_DMA = {
    s.op: (s.elem_bytes, next(o.space for o in s.operands if o.kind == "mem"), s.queue is Queue.STORE)
    for s in INSTRUCTIONS if s.fmt == "dma"
}


class AddrRangeError(Exception):
    """Raised by :meth:`Prepared.resolve`; the simulator turns it into an ``ADDR_RANGE`` SimError."""


class Cmd:
    """A dispatched instruction with its registers resolved to absolute values.

    ``mem``/``dram`` for DMA, ``src``/``dst`` for compute; ``mult`` is the value of ``qreg``;
    ``pops``/``pushes`` are token channel indices (``CHANNEL_INDEX``); ``execute`` runs it.
    """
    __slots__ = ("pc", "op", "unit", "pops", "pushes", "execute", "mem", "dram", "rows", "len", "stride",
                 "src", "dst", "accumulate", "mult", "shift", "zp", "relu")

    def __init__(self, pc, op, unit, pops, pushes, execute, mem=0, dram=0, rows=0, len=0, stride=0,
                 src=0, dst=0, accumulate=0, mult=0, shift=0, zp=0, relu=0):
        self.pc, self.op, self.unit, self.pops, self.pushes, self.execute = pc, op, unit, pops, pushes, execute
        self.mem, self.dram, self.rows, self.len, self.stride = mem, dram, rows, len, stride
        self.src, self.dst, self.accumulate = src, dst, accumulate
        self.mult, self.shift, self.zp, self.relu = mult, shift, zp, relu

    def __repr__(self):
        return f"Cmd(pc={self.pc}, {BY_OPCODE[self.op].mnemonic})"


class Machine:
    """The memories of the NPU and the traffic counters the result reports."""

    def __init__(self, config, dram: np.ndarray):
        self.config = config
        self.dram = dram
        self.spad = np.zeros((config.spad_rows, config.spad_row_bytes), np.int8)
        self.acc = np.zeros((config.acc_rows, config.cols), np.int32)
        # The weight tile, kept as float32: int8 products and sums of at most 64 of them stay
        # below 2**24, so a float32 product is exact and fast (BLAS), whatever the summation order.
        self.weights = np.zeros((config.rows, config.cols), np.float32)
        self.array_macs = 0
        self.dram_read_bytes = 0
        self.dram_write_bytes = 0


# ---- dispatch: resolve and check ------------------------------------------------------------

class Prepared:
    """A decoded queue instruction, ready to be resolved against the registers at dispatch.

    The operand fields are unpacked once here; :meth:`resolve` (bound to the resolver of the
    instruction's kind) only adds registers and compares bounds.
    """
    __slots__ = ("pc", "op", "unit", "pops", "pushes", "mnemonic", "config", "kind", "resolve", "command", "execute",
                 "f")

    def __init__(self, pc: int, instr: Instruction, config):
        spec = BY_OPCODE[instr.op]
        legal = LEGAL_DEPS[spec.queue]
        op = instr.op
        self.pc, self.op, self.config, self.mnemonic = pc, op, config, spec.mnemonic
        self.unit = UNIT_INDEX[spec.queue]
        self.pops = tuple(CHANNEL_INDEX[legal[f]] for f in ("pop_prev", "pop_next") if f in instr.deps)
        self.pushes = tuple(CHANNEL_INDEX[legal[f]] for f in ("push_prev", "push_next") if f in instr.deps)
        self.execute = EXECUTE[op]
        a = {name: instr.arg(name) for name in (o.name for o in spec.operands)}
        quant = (a["qreg"], a["shift"], a["zp"], a["relu"]) if "qreg" in a else (0, 0, 0, 0)
        if op in _DMA:
            elem, space, _ = _DMA[op]
            mem = a["acc" if space == "acc" else "sp"]
            self.f = (*mem, *a["dram"], a["rows"], a["len"], a["stride"], elem, space == "acc", *quant)
            self.kind, self.resolve, self.command = "dma", self._resolve_dma, self._dma_command
        elif op == Opcode.PRELOAD:
            self.f = a["sp"]
            self.kind, self.resolve, self.command = "preload", self._resolve_preload, self._preload_command
        else:
            matmul = op == Opcode.MATMUL
            src, dst = (a["sp"], a["acc"]) if matmul else (a["src"], a["dst"])
            self.f = (*src, *dst, a["rows"], a.get("accumulate", 0), matmul, *quant)
            self.kind, self.resolve, self.command = "compute", self._resolve_compute, self._compute_command

    # Each resolver: resolve ``rN+off`` and ``qreg`` with the current registers and check every
    # address, raising AddrRangeError with a message naming the operand, the range and the size.
    def _resolve_dma(self, regs: list[int]) -> Cmd:
        mreg, moff, dreg, doff, rows, length, stride, elem, is_acc, qreg, shift, zp, relu = self.f
        cfg = self.config
        mem = (regs[mreg] + moff) & MASK32
        dram = (regs[dreg] + doff) & MASK32
        if rows > 0:
            self._rows(is_acc, "acc" if is_acc else "sp", mem, rows)
            limit = cfg.cols if is_acc else cfg.spad_row_bytes
            if length > limit:
                what = "cols" if is_acc else "spad_row_bytes"
                raise AddrRangeError(f"{self.mnemonic}: len={length} is more than {what}={limit} elements")
            end = dram + (rows - 1) * stride + length * elem
            if length > 0 and end > cfg.dram_bytes:
                raise AddrRangeError(f"{self.mnemonic}: dram: row {rows - 1} ends at byte {end} "
                                     f"(dram={dram:#x}, stride={stride}, len={length} x {elem} bytes), "
                                     f"past dram_bytes={cfg.dram_bytes}")
        return self.command(mem=mem, dram=dram, mult=regs[qreg])

    def _resolve_preload(self, regs: list[int]) -> Cmd:
        reg, off = self.f
        src = (regs[reg] + off) & MASK32
        # preload always reads one weight tile: the array's rows, whatever its rows field says.
        self._rows(False, "sp", src, self.config.rows)
        return self.command(src=src)

    def _resolve_compute(self, regs: list[int]) -> Cmd:
        sreg, soff, dreg, doff, rows, accumulate, matmul, qreg, shift, zp, relu = self.f
        src = (regs[sreg] + soff) & MASK32
        dst = (regs[dreg] + doff) & MASK32
        if rows > 0:
            self._rows(not matmul, "sp" if matmul else "src", src, rows)
            self._rows(True, "acc" if matmul else "dst", dst, rows)
        return self.command(src=src, dst=dst, mult=regs[qreg])

    # ``command(mem=, dram=, src=, dst=, mult=)``: the command with these resolved values (what
    # ``resolve`` returns, without its checks); bound to the kind's builder in __init__.
    def _dma_command(self, mem: int = 0, dram: int = 0, src: int = 0, dst: int = 0, mult: int = 0) -> Cmd:
        rows, length, stride, quant = self.f[4], self.f[5], self.f[6], self.f[10:]
        return Cmd(self.pc, self.op, self.unit, self.pops, self.pushes, self.execute, mem, dram, rows, length,
                   stride, 0, 0, 0, mult, *quant)

    def _preload_command(self, mem: int = 0, dram: int = 0, src: int = 0, dst: int = 0, mult: int = 0) -> Cmd:
        return Cmd(self.pc, self.op, self.unit, self.pops, self.pushes, self.execute, src=src)

    def _compute_command(self, mem: int = 0, dram: int = 0, src: int = 0, dst: int = 0, mult: int = 0) -> Cmd:
        rows, accumulate, quant = self.f[4], self.f[5], self.f[8:]
        return Cmd(self.pc, self.op, self.unit, self.pops, self.pushes, self.execute, 0, 0, rows, 0, 0,
                   src, dst, accumulate, mult, *quant)

    def _rows(self, is_acc: bool, operand: str, first: int, rows: int) -> None:
        limit = self.config.acc_rows if is_acc else self.config.spad_rows
        if first + rows > limit:
            name, field = ("accumulator", "acc_rows") if is_acc else ("scratchpad", "spad_rows")
            raise AddrRangeError(f"{self.mnemonic}: {operand}: {name} rows [{first}, {first + rows}) "
                                 f"are outside [0, {limit}) ({field}={limit})")


def prepare(pc: int, instr: Instruction, config) -> Prepared:
    """Prepare a decoded queue instruction at index ``pc`` for dispatch."""
    return Prepared(pc, instr, config)


SCALAR_OPS = frozenset(s.op for s in INSTRUCTIONS if s.queue == Queue.SCALAR)


def decode_entry(pc: int, word: int, config):
    """What the dispatcher makes of the word at ``pc``, for every simulator:
    ``("scalar", Instruction)``, ``("queue", Prepared)``, or ``(ErrorCode, message)`` for a word
    that does not decode."""
    try:
        instr = decode(word)
    except DecodeError as e:
        return e.code, f"word {word:#034x}: {e}"
    if instr.op in SCALAR_OPS:
        return "scalar", instr
    return "queue", Prepared(pc, instr, config)


# ---- execution -----------------------------------------------------------------------------

def _dram_rows(dram: np.ndarray, first: int, rows: int, nbytes: int, stride: int):
    """A (rows, nbytes) view of DRAM rows ``stride`` bytes apart (bounds checked at dispatch)."""
    return np.ndarray((rows, nbytes), np.uint8, dram, first, (stride, 1))


def _write_dram_rows(m: Machine, first: int, data: np.ndarray, stride: int) -> None:
    """Store a (rows, nbytes) uint8 block row after row, as ``for i in 0..rows-1`` does."""
    rows, nbytes = data.shape
    if rows == 0 or nbytes == 0:
        return
    m.dram_write_bytes += rows * nbytes
    if rows == 1 or stride >= nbytes:
        _dram_rows(m.dram, first, rows, nbytes, stride)[...] = data
    elif stride == 0:
        m.dram[first:first + nbytes] = data[-1]
    else:
        # Overlapping rows: the later row wins. The block is contiguous; byte t belongs to the
        # last row that covers it.
        t = np.arange((rows - 1) * stride + nbytes)
        i = np.minimum(t // stride, rows - 1)
        m.dram[first:first + t.size] = data[i, t - i * stride]


def _load_int8(dst: np.ndarray, m: Machine, c: Cmd) -> None:
    """LOAD_SP / LOAD_ACC8: ``len`` int8 elements per row into ``dst``, the rest of the row zeroed."""
    if c.len:
        dst[:, :c.len] = _dram_rows(m.dram, c.dram, c.rows, c.len, c.stride).view(np.int8)
        m.dram_read_bytes += c.rows * c.len
    dst[:, c.len:] = 0


def _load_sp(m: Machine, c: Cmd) -> None:
    if c.rows:
        _load_int8(m.spad[c.mem:c.mem + c.rows], m, c)


def _load_acc8(m: Machine, c: Cmd) -> None:
    if c.rows:
        _load_int8(m.acc[c.mem:c.mem + c.rows], m, c)


def _load_acc32(m: Machine, c: Cmd) -> None:
    if c.rows == 0:
        return
    dst = m.acc[c.mem:c.mem + c.rows]
    if c.len:
        raw = np.ascontiguousarray(_dram_rows(m.dram, c.dram, c.rows, 4 * c.len, c.stride))
        dst[:, :c.len] = raw.view("<i4")
        m.dram_read_bytes += c.rows * 4 * c.len
    dst[:, c.len:] = 0


def _store_acc32(m: Machine, c: Cmd) -> None:
    block = np.ascontiguousarray(m.acc[c.mem:c.mem + c.rows, :c.len], dtype="<i4")
    _write_dram_rows(m, c.dram, block.view(np.uint8).reshape(block.shape[0], 4 * c.len), c.stride)


def _store_acc8(m: Machine, c: Cmd) -> None:
    block = requant(m.acc[c.mem:c.mem + c.rows, :c.len], c.mult, c.shift, c.zp, bool(c.relu))
    _write_dram_rows(m, c.dram, block.view(np.uint8), c.stride)


def _store_sp(m: Machine, c: Cmd) -> None:
    _write_dram_rows(m, c.dram, m.spad[c.mem:c.mem + c.rows, :c.len].view(np.uint8), c.stride)


def _preload(m: Machine, c: Cmd) -> None:
    cfg = m.config
    m.weights = m.spad[c.src:c.src + cfg.rows, :cfg.cols].astype(np.float32)


def _matmul(m: Machine, c: Cmd) -> None:
    if c.rows == 0:
        return
    cfg = m.config
    product = (m.spad[c.src:c.src + c.rows, :cfg.rows].astype(np.float32) @ m.weights).astype(np.int32)
    dst = m.acc[c.dst:c.dst + c.rows]
    if c.accumulate:
        np.add(dst, product, out=dst)       # int32 arrays wrap modulo 2**32
    else:
        dst[...] = product
    m.array_macs += c.rows * cfg.rows * cfg.cols


def _rowwise(acc: np.ndarray, dst: int, src: int, rows: int, fn) -> None:
    """``for i in 0..rows-1: acc[dst+i] = fn(acc[dst+i], acc[src+i])``, vectorised.

    When ``src < dst < src + rows`` a row written at step i is read again at step
    ``i + (dst - src)``, so the rows go in chunks of ``dst - src``, each reading only
    rows finished by earlier chunks. Otherwise every read precedes the write of its row,
    and one numpy expression (which reads its operands before writing) is exact.
    """
    if rows == 0:
        return
    gap = dst - src
    if not 0 < gap < rows:
        acc[dst:dst + rows] = fn(acc[dst:dst + rows], acc[src:src + rows])
        return
    for i in range(0, rows, gap):
        n = min(gap, rows - i)
        acc[dst + i:dst + i + n] = fn(acc[dst + i:dst + i + n], acc[src + i:src + i + n])


def _vadd(m: Machine, c: Cmd) -> None:
    _rowwise(m.acc, c.dst, c.src, c.rows, np.add)           # int32 + int32 wraps


def _vmax(m: Machine, c: Cmd) -> None:
    _rowwise(m.acc, c.dst, c.src, c.rows, np.maximum)


def _vrelu(m: Machine, c: Cmd) -> None:
    _rowwise(m.acc, c.dst, c.src, c.rows, lambda _, s: np.maximum(s, 0))


def _vquant(m: Machine, c: Cmd) -> None:
    _rowwise(m.acc, c.dst, c.src, c.rows,
             lambda _, s: requant(s, c.mult, c.shift, c.zp, bool(c.relu)).astype(np.int32))


EXECUTE = {
    Opcode.LOAD_SP: _load_sp, Opcode.LOAD_ACC8: _load_acc8, Opcode.LOAD_ACC32: _load_acc32,
    Opcode.PRELOAD: _preload, Opcode.MATMUL: _matmul,
    Opcode.VADD: _vadd, Opcode.VMAX: _vmax, Opcode.VRELU: _vrelu, Opcode.VQUANT: _vquant,
    Opcode.STORE_ACC32: _store_acc32, Opcode.STORE_ACC8: _store_acc8, Opcode.STORE_SP: _store_sp,
}
assert set(EXECUTE) == {s.op for s in BY_OPCODE.values() if s.queue != Queue.SCALAR}
