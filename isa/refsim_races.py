"""Race check for the reference simulator (``run(..., check_races=True)``).

isa/execution.py orders the memory accesses of different units only through
tokens: a program in which two units touch the same scratchpad row, accumulator
row or DRAM byte, at least one of them writing, with no token path between the
two instructions, has no defined result (the RTL may give another one). This
module finds such pairs with vector clocks, as a thread-race detector does:

- each unit has a clock (one counter per unit); executing an instruction ticks
  the unit's own counter;
- a pushed token carries a copy of the pusher's clock; the k-th pop of a channel
  takes the clock of its k-th push (counters hand tokens out in order) and joins it;
- a ``fence`` joins every clock (every unit has drained when dispatch resumes).

Access ``a`` by unit u happens before an access by unit v when a's stamp is at
most v's current counter for u. Each unit keeps its accesses that some other
unit has not yet seen; the rest are dropped. Back-pressure (a full queue or a
token counter at ``token_depth``) also orders some events, but a program that
leans on it for correctness is fragile, so it does not count here.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from .refsim_units import Cmd
from .spec import BY_OPCODE, Opcode

__all__ = ["RaceChecker", "RaceError", "Access"]

UNIT_NAMES = ("load", "compute", "store")
SPACE_NAMES = {"spad": "scratchpad rows", "acc": "accumulator rows", "dram": "DRAM bytes"}


class RaceError(ValueError):
    """Two units access the same memory, one writing, with no token path between them.

    Attributes
    ----------
    first, second : Access
        The two accesses, the one with the smaller instruction index first.
    where : int
        The first row (scratchpad / accumulator) or DRAM byte both touch.
    """

    def __init__(self, first: "Access", second: "Access", where: int):
        if (second.pc, second.unit) < (first.pc, first.unit):
            first, second = second, first
        self.first, self.second, self.where = first, second, where
        space = SPACE_NAMES[first.space][:-1]      # "scratchpad row", "DRAM byte"
        super().__init__(f"race: instruction {first.pc} ({first.describe()}) and instruction {second.pc} "
                         f"({second.describe()}) both touch {space} {where}, and no token path orders them")


@dataclass(frozen=True)
class Access:
    """One instruction's access to one memory: rows ``[first, first+rows)`` of spad / acc, or
    DRAM rows of ``nbytes`` bytes ``stride`` apart starting at byte ``first``."""
    unit: int
    stamp: int
    pc: int
    op: Opcode
    space: str
    write: bool
    first: int
    rows: int
    nbytes: int = 1
    stride: int = 1

    def describe(self) -> str:
        verb = "writes" if self.write else "reads"
        if self.space == "dram":
            end = self.first + (self.rows - 1) * self.stride + self.nbytes
            what = f"DRAM bytes [{self.first}, {end}), {self.rows} rows of {self.nbytes} every {self.stride}"
        else:
            what = f"{SPACE_NAMES[self.space]} [{self.first}, {self.first + self.rows})"
        return f"{UNIT_NAMES[self.unit]} unit, {BY_OPCODE[self.op].mnemonic} {verb} {what}"


_DMA_ELEM = {Opcode.LOAD_SP: ("spad", 1), Opcode.LOAD_ACC8: ("acc", 1), Opcode.LOAD_ACC32: ("acc", 4),
             Opcode.STORE_ACC32: ("acc", 4), Opcode.STORE_ACC8: ("acc", 1), Opcode.STORE_SP: ("spad", 1)}
_STORES = {Opcode.STORE_ACC32, Opcode.STORE_ACC8, Opcode.STORE_SP}


def footprint(cmd: Cmd, config, stamp: int) -> list[Access]:
    """The memory accesses of one resolved instruction."""
    u, pc, op = cmd.unit, cmd.pc, cmd.op

    def acc(space, write, first, rows, nbytes=1, stride=1):
        return Access(u, stamp, pc, op, space, write, first, rows, nbytes, stride)

    out = []
    if op in _DMA_ELEM:
        space, elem = _DMA_ELEM[op]
        store = op in _STORES
        if cmd.rows:
            out.append(acc(space, not store, cmd.mem, cmd.rows))
            if cmd.len:
                out.append(acc("dram", store, cmd.dram, cmd.rows, cmd.len * elem, cmd.stride))
    elif op == Opcode.PRELOAD:
        out.append(acc("spad", False, cmd.src, config.rows))
    elif cmd.rows:
        out.append(acc("spad" if op == Opcode.MATMUL else "acc", False, cmd.src, cmd.rows))
        out.append(acc("acc", True, cmd.dst, cmd.rows))
    return out


def _span(a: Access) -> tuple[int, int]:
    return a.first, a.first + (a.rows - 1) * a.stride + a.nbytes


def _cover(a: Access, lo: int, hi: int) -> np.ndarray:
    """Which bytes of [lo, hi) a strided DRAM access touches."""
    rows, nbytes, stride = a.rows, a.nbytes, a.stride
    if rows == 1 or stride < nbytes:            # one contiguous block (rows touch or overlap)
        start, end = _span(a)
        out = np.zeros(hi - lo, bool)
        out[max(start, lo) - lo:max(min(end, hi) - lo, 0)] = True
        return out
    i = np.arange(max(0, (lo - a.first - nbytes) // stride), min(rows, (hi - a.first) // stride + 1))
    starts = np.clip(a.first + i * stride - lo, 0, hi - lo)
    ends = np.clip(a.first + i * stride + nbytes - lo, 0, hi - lo)
    diff = np.zeros(hi - lo + 1, np.int64)
    np.add.at(diff, starts, 1)
    np.add.at(diff, ends, -1)
    return np.cumsum(diff[:-1]) > 0


def overlap(a: Access, b: Access) -> int | None:
    """The first row / byte two accesses of the same memory share, or None."""
    (a0, a1), (b0, b1) = _span(a), _span(b)
    lo, hi = max(a0, b0), min(a1, b1)
    if lo >= hi:
        return None
    if a.space != "dram" or (_contiguous(a) and _contiguous(b)):
        return lo
    both = _cover(a, lo, hi) & _cover(b, lo, hi)
    return lo + int(np.argmax(both)) if both.any() else None


def _contiguous(a: Access) -> bool:
    return a.rows == 1 or a.stride <= a.nbytes


class RaceChecker:
    """Vector clocks of the three units and the clocks in flight on the four token channels."""

    def __init__(self, config):
        self.config = config
        self.clocks = [[0, 0, 0] for _ in range(3)]
        self.channels = [deque() for _ in range(4)]
        self.history = [deque() for _ in range(3)]     # per unit, accesses in stamp order

    def execute(self, cmd: Cmd) -> None:
        """Account for ``cmd`` executing now (its pops were just taken).

        Raises
        ------
        RaceError
            When one of its accesses conflicts with an access of another unit it is not ordered with.
        """
        u = cmd.unit
        clock = self.clocks[u]
        for ch in cmd.pops:
            carried = self.channels[ch].popleft()
            for w in range(3):
                clock[w] = max(clock[w], carried[w])
        clock[u] += 1
        mine = footprint(cmd, self.config, clock[u])
        for v in range(3):
            if v == u:
                continue
            seen = clock[v]
            for earlier in reversed(self.history[v]):
                if earlier.stamp <= seen:
                    break
                for a in mine:
                    if a.space == earlier.space and (a.write or earlier.write):
                        where = overlap(earlier, a)
                        if where is not None:
                            raise RaceError(earlier, a, where)
        self.history[u].extend(mine)
        self._prune()

    def pushed(self, cmd: Cmd) -> None:
        """``cmd`` has given its tokens: each carries the unit's clock."""
        for ch in cmd.pushes:
            self.channels[ch].append(tuple(self.clocks[cmd.unit]))

    def fence(self) -> None:
        """Dispatch passed a fence: everything before it happens before everything after."""
        joined = [max(c[w] for c in self.clocks) for w in range(3)]
        for c in self.clocks:
            c[:] = joined
        self._prune()

    def _prune(self) -> None:
        for w in range(3):
            seen_by_all = min(self.clocks[v][w] for v in range(3) if v != w)
            h = self.history[w]
            while h and h[0].stamp <= seen_by_all:
                h.popleft()
