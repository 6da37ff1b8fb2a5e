"""What every kernel lowering shares: the emitter with its register allocator and loops,
the token-only instructions, and the DRAM layout of a kernel's tensors.

Loops. A kernel walks its tiles with :meth:`Emitter.for_range`: iterations are
grouped into runs of the same *variant* (a hashable value that decides what the
body emits: an edge tile's shorter length, whether this is the first k-tile, ...),
and each run of two or more becomes one ``dbnz`` loop. Address registers advance
by a fixed step per iteration and are restored when the range ends, so a body can
reason about its registers locally. Program size therefore grows with the number
of distinct variants (edges), not with the tensor sizes.

Tokens. Instructions with ``rows=0`` touch no memory (isa/execution.py checks and
executes nothing for them) but still pop and push tokens; the kernels use them to
seed, hand over and drain the dependency-token channels, so that every lowering
leaves all four counters exactly as it found them (balanced) and two lowerings can
follow each other in one program.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Hashable, Sequence

import numpy as np

from ...assembler.builder import ProgramBuilder
from ...isa.spec import NUM_REGS

__all__ = ["KernelError", "Emitter", "TensorInfo", "DramLayout", "ceil_div", "check_positive"]


class KernelError(ValueError):
    """A kernel cannot be lowered: a shape, tiling or program-size limit is broken."""


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def check_positive(kernel: str, shape: dict, names: Sequence[str], minimum: int = 1) -> None:
    """Raise :class:`KernelError` naming the first shape field that is not an int >= ``minimum``."""
    for name in names:
        v = shape.get(name)
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < minimum:
            raise KernelError(f"{kernel}: {name} must be an integer >= {minimum}, got {v!r}")


def _imm32(value: int) -> int:
    """A value as the signed 32-bit immediate that gives the same register bits."""
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value >> 31 else value


class Emitter:
    """A :class:`ProgramBuilder` plus a scalar-register allocator and structured loops.

    Parameters
    ----------
    config : HwConfig
    builder : ProgramBuilder, optional
        Append to this builder (to put several lowerings in one program); a new one by default.
    """

    def __init__(self, config, builder: ProgramBuilder | None = None):
        self.config = config
        self.b = builder if builder is not None else ProgramBuilder(config)
        self._free = list(range(NUM_REGS - 1, 0, -1))      # r1 is handed out first
        self._labels = 0

    # ---- registers --------------------------------------------------------------------------
    def reg(self) -> int:
        """Allocate a scalar register (r1..r15)."""
        if not self._free:
            raise KernelError("out of scalar registers (r1..r15 all in use): the loop nest is too deep")
        return self._free.pop()

    def free(self, *regs: int) -> None:
        for r in regs:
            if r in self._free or not 0 < r < NUM_REGS:
                raise KernelError(f"register r{r} freed twice or never allocated")
            self._free.append(r)

    def set(self, r: int, value: int, comment: str | None = None) -> None:
        self.b.emit("seti", rd=r, imm=_imm32(value), comment=comment)

    def add(self, r: int, imm: int) -> None:
        if imm:
            self.b.emit("addi", rd=r, rs=r, imm=_imm32(imm))

    def copy(self, rd: int, rs: int) -> None:
        self.b.emit("addi", rd=rd, rs=rs, imm=0)

    def swap(self, a: int, b: int, tmp: int) -> None:
        """Exchange two registers (double buffering whose parity a loop body cannot know)."""
        self.copy(tmp, a)
        self.copy(a, b)
        self.copy(b, tmp)

    # ---- instructions -----------------------------------------------------------------------
    def emit(self, mnemonic: str, deps: Sequence[str] = (), comment: str | None = None, **operands) -> int:
        return self.b.emit(mnemonic, deps=tuple(deps), comment=comment, **operands)

    def comment(self, text: str) -> None:
        self.b.comment(text)

    def tok_load(self, *deps: str, comment: str | None = None) -> None:
        """A load that moves nothing: only pops ``C2L`` / pushes ``L2C``."""
        self.emit("load.sp", deps, comment, sp=0, dram=0, rows=0, len=0, stride=0)

    def tok_compute(self, *deps: str, comment: str | None = None) -> None:
        """A compute instruction that computes nothing: only moves tokens."""
        self.emit("matmul", deps, comment, acc=0, sp=0, rows=0)

    def tok_store(self, *deps: str, comment: str | None = None) -> None:
        """A store that moves nothing: only pops ``C2S`` / pushes ``S2C``."""
        self.emit("store.acc32", deps, comment, dram=0, acc=0, rows=0, len=0, stride=0)

    def emit_group(self, instrs: Sequence[tuple[str, dict]], first: Sequence[str], last: Sequence[str]) -> None:
        """Emit ``(mnemonic, operands)`` pairs, the first one popping ``first``, the last pushing ``last``."""
        for i, (mnemonic, ops) in enumerate(instrs):
            deps = (list(first) if i == 0 else []) + (list(last) if i == len(instrs) - 1 else [])
            self.emit(mnemonic, deps, **ops)

    # ---- loops ------------------------------------------------------------------------------
    def for_range(self, count: int, variant: Callable[[int], Hashable], body: Callable[[Hashable], None],
                  advances: Sequence[tuple[int, int]] = ()) -> None:
        """Emit ``body`` for ``count`` iterations, as ``dbnz`` loops over runs of equal variants.

        Parameters
        ----------
        count : int
            Number of iterations (0 emits nothing).
        variant : callable
            ``variant(i)`` gives a hashable value; consecutive iterations with equal values share
            one loop body, ``body(value)``.
        body : callable
            Emits one iteration's instructions for a variant.
        advances : sequence of (register, step)
            Registers that advance by ``step`` per iteration; they hold their value for
            iteration 0 on entry and are restored to it on exit.
        """
        runs: list[list] = []
        for i in range(count):
            v = variant(i)
            if runs and runs[-1][0] == v:
                runs[-1][1] += 1
            else:
                runs.append([v, 1])
        pos = 0                         # the iteration the advancing registers point at
        for index, (v, n) in enumerate(runs):
            if n == 1:
                body(v)
            else:
                ctr = self.reg()
                self._labels += 1
                label = f"L{self._labels}"
                self.set(ctr, n)
                self.b.label(label)
                body(v)
                for r, step in advances:
                    self.add(r, step)
                self.b.emit("dbnz", rd=ctr, target=label)
                self.free(ctr)
                pos += n                # a loop leaves its registers one step past its last iteration
            if index < len(runs) - 1 and n == 1:
                for r, step in advances:
                    self.add(r, step)
                pos += 1
        for r, step in advances:
            self.add(r, -pos * step)


# ---- DRAM layout ------------------------------------------------------------------------------

@dataclass(frozen=True)
class TensorInfo:
    """A tensor in DRAM: row-major, little-endian."""
    name: str
    addr: int
    shape: tuple[int, ...]
    dtype: str          # "int8" or "int32"
    role: str           # "input" or "output"

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape)) * np.dtype(self.dtype).itemsize

    def to_json(self) -> dict:
        return {"addr": self.addr, "shape": list(self.shape), "dtype": self.dtype, "role": self.role}


class DramLayout:
    """Places a kernel's tensors in DRAM, inputs first, each aligned to ``align`` bytes."""

    def __init__(self, config, align: int = 64):
        self.config = config
        self.align = align
        self.tensors: dict[str, TensorInfo] = {}
        self._next = 0

    def add(self, name: str, shape: Sequence[int], dtype: str, role: str) -> int:
        if name in self.tensors:
            raise KernelError(f"tensor '{name}' placed twice")
        shape = tuple(int(s) for s in shape)
        info = TensorInfo(name, self._next, shape, dtype, role)
        end = info.addr + info.nbytes
        if end > self.config.dram_bytes:
            raise KernelError(f"tensor '{name}' {list(shape)} {dtype} ends at byte {end}, past "
                              f"dram_bytes={self.config.dram_bytes} of config '{self.config.name}'")
        self.tensors[name] = info
        self._next = ceil_div(end, self.align) * self.align
        return info.addr

    def image(self, arrays: dict[str, np.ndarray]) -> np.ndarray:
        """The initial DRAM image: the input tensors, trimmed after the last input byte."""
        inputs = [t for t in self.tensors.values() if t.role == "input"]
        size = max((t.addr + t.nbytes for t in inputs), default=0)
        img = np.zeros(size, np.uint8)
        for t in inputs:
            data = np.ascontiguousarray(arrays[t.name], dtype=np.dtype(t.dtype).newbyteorder("<"))
            if data.shape != t.shape:
                raise KernelError(f"tensor '{t.name}': data shape {data.shape} differs from {t.shape}")
            img[t.addr:t.addr + t.nbytes] = data.view(np.uint8).reshape(-1)
        return img
