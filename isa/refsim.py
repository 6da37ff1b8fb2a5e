"""The bit-exact reference simulator: the definition of a correct result for every fidelity.

It follows :mod:`.execution` to the letter. The dispatcher and the three units
(load, compute, store) form a Kahn process network over bounded queues
(``queue_depth``) and bounded token counters (``token_depth``): each unit runs its
stream in order and blocks only on a counter or a queue, so results, and whether
and where a program deadlocks, do not depend on how the processes interleave.
The simulator therefore uses the simplest schedule: run the dispatcher until it
blocks, then every unit until none can move, and repeat; when nothing moved in a
whole round, the program is finished (halted and drained) or deadlocked.

Timing-free choices that every fidelity shares (stated in :mod:`.execution`): a
unit takes an instruction out of its queue before waiting for its pop tokens;
pops are taken, and pushes given, all at once.

``dbnz`` on ``r0`` never branches (``r0`` still reads 0 after the decrement is
dropped). ``STEP_LIMIT`` is raised at the instruction the dispatcher reaches
after it has dispatched ``step_limit`` instructions (scalar ones included).

``run(..., check_races=True)`` also proves that the run's result is defined: no two
units touch the same memory, one writing, without a token path (:mod:`.refsim_races`).
``run(..., schedule_seed=s)`` interleaves the processes at random instead, to show
(in tests) that the outcome does not depend on the schedule.

Per-instruction semantics live in :mod:`.refsim_units`.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .image import ImageError, ProgramImage
from .refsim_races import RaceChecker, RaceError
from .refsim_units import MASK32, AddrRangeError, Cmd, Machine, Prepared, decode_entry
from .spec import BY_OPCODE, INSTRUCTIONS, NUM_REGS, WORD_BITS, Dep, ErrorCode, Opcode

__all__ = ["run", "RefResult", "SimError", "RaceError", "program_words", "initial_dram"]


class SimError(Exception):
    """An illegal program stopped the machine.

    Attributes
    ----------
    code : ErrorCode
    pc : int
        Index of the instruction the error is reported at (isa/execution.py).
    line : int or None
        Source line of that instruction, when the caller gave ``source_lines``.
    message : str
        What is wrong, naming the instruction and the field.
    """

    def __init__(self, code: ErrorCode, pc: int, message: str, line: int | None = None):
        self.code, self.pc, self.message, self.line = code, pc, message, line
        where = f"instruction {pc}" + (f" (line {line})" if line is not None else "")
        super().__init__(f"{where}: {code.name}: {message}")


@dataclass
class RefResult:
    """The final state of a run and what it did."""
    dram: np.ndarray            # uint8, dram_bytes long
    spad: np.ndarray            # int8, (spad_rows, spad_row_bytes)
    acc: np.ndarray             # int32, (acc_rows, cols)
    regs: list[int]             # r0..r15, unsigned 32-bit
    dispatched: int             # instructions dispatched, scalar ones included
    counts: dict[str, int]      # every mnemonic: instructions executed (0 when none)
    array_macs: int             # sum over matmul of rows * config.rows * config.cols
    dram_read_bytes: int        # bytes the loads moved (len * element bytes per row)
    dram_write_bytes: int       # bytes the stores moved


_CHANNEL_NAMES = tuple(ch.name for ch in Dep)


def program_words(program, config) -> tuple[int, ...]:
    """The instruction words of a ProgramImage (checked against ``config``) or a word sequence
    (at most ``imem_words`` words of 128 bits); ImageError / ValueError otherwise."""
    if isinstance(program, ProgramImage):
        program.check_config(config)
        return program.words
    words = tuple(int(w) for w in program)
    if len(words) > config.imem_words:
        raise ImageError(f"<words>: {len(words)} instructions do not fit the instruction memory "
                         f"of {config.imem_words} words (imem_words)")
    for i, w in enumerate(words):
        if not 0 <= w < 1 << WORD_BITS:
            raise ValueError(f"instruction {i}: word {w:#x} is not a {WORD_BITS}-bit value")
    return words


def initial_dram(dram, config) -> np.ndarray:
    src = np.frombuffer(bytes(dram), np.uint8) if isinstance(dram, (bytes, bytearray, memoryview)) \
        else np.asarray(dram)
    if src.dtype != np.uint8 or src.ndim != 1:
        raise ValueError(f"dram must be bytes or a 1-D uint8 array, got {src.dtype} with shape {src.shape}")
    if src.size > config.dram_bytes:
        raise ValueError(f"dram image has {src.size} bytes, more than dram_bytes={config.dram_bytes}")
    out = np.zeros(config.dram_bytes, np.uint8)
    out[:src.size] = src                    # a copy: the caller's array is never modified
    return out


def run(program, dram, config, *, step_limit: int = 50_000_000, source_lines: Sequence[int] | None = None,
        check_races: bool = False, schedule_seed: int | None = None) -> RefResult:
    """Run a program on the reference simulator.

    Parameters
    ----------
    program : ProgramImage or sequence of int
        The program; an image must have been made for ``config``. Words past its end read as 0.
    dram : numpy.ndarray of uint8 or bytes
        Initial DRAM contents, at most ``config.dram_bytes`` long (zero-padded; not modified).
    config : HwConfig
    step_limit : int
        Most instructions the dispatcher may dispatch (scalar ones included) before ``STEP_LIMIT``.
    source_lines : sequence of int, optional
        Source line of each instruction index, for error messages.
    check_races : bool
        Also check that every pair of conflicting memory accesses by different units is
        ordered by tokens (see :mod:`.refsim_races`); slower.
    schedule_seed : int, optional
        Interleave the dispatcher and the units at random, a few steps at a time, from this
        seed, instead of the default schedule. Every outcome (results of a race-free program,
        the error code and index) must be the same; tests use it to show that they are.

    Returns
    -------
    RefResult

    Raises
    ------
    SimError
        The program is illegal (code and instruction index as isa/execution.py defines them).
    RaceError
        With ``check_races``: two units access the same memory without a token path between them.
    ImageError
        The image was made for another config or does not fit the instruction memory.
    ValueError
        A malformed DRAM image or word.
    """
    words = program_words(program, config)
    machine = Machine(config, initial_dram(dram, config))
    races = RaceChecker(config) if check_races else None
    sim = _Sim(words, machine, config, step_limit, source_lines, races)
    if schedule_seed is None:
        sim.run()
    else:
        sim.run_shuffled(np.random.default_rng(schedule_seed))
    return RefResult(machine.dram, machine.spad, machine.acc, list(sim.regs), sim.dispatched,
                     {BY_OPCODE[op].mnemonic: n for op, n in sim.counts.items()},
                     machine.array_macs, machine.dram_read_bytes, machine.dram_write_bytes)


class _Sim:
    """Dispatcher, queues, token counters and units of one run."""

    def __init__(self, words, machine, config, step_limit, source_lines, races):
        self.words, self.m, self.config = words, machine, config
        self.step_limit, self.source_lines, self.races = step_limit, source_lines, races
        self.regs = [0] * NUM_REGS
        self.dispatched = 0
        self.counts = {s.op: 0 for s in INSTRUCTIONS}
        self.cache: dict[int, object] = {}      # pc -> Instruction or Prepared (decoded once)
        self.tokens = [0, 0, 0, 0]
        self.queues = [deque(), deque(), deque()]
        self.current: list[Cmd | None] = [None, None, None]   # instruction each unit holds
        self.executed = [False, False, False]                  # ... and whether it only waits to push
        self.pc = 0
        self.pending: Cmd | None = None         # dispatched, waiting for queue space
        self.fence = False                      # dispatcher waits on a fence at self.pc
        self.halted = False

    def error(self, code: ErrorCode, pc: int, message: str) -> SimError:
        line = None
        if self.source_lines is not None and 0 <= pc < len(self.source_lines):
            line = self.source_lines[pc]
        return SimError(code, pc, message, line)

    # ---- the run loop ----------------------------------------------------------------------
    def run(self) -> None:
        while True:
            moved = self.dispatch()
            moved |= self.units()
            if self.halted and self.idle():
                return
            if not moved:
                raise self.deadlock()

    def run_shuffled(self, rng: np.random.Generator) -> None:
        """Give one process (dispatcher or unit), picked at random, a few steps at a time."""
        while True:
            for p in rng.permutation(4):
                steps = int(rng.integers(1, 4))
                if self.dispatch(steps) if p == 3 else self.unit(int(p), steps):
                    break
            else:
                if self.halted and self.idle():
                    return
                raise self.deadlock()

    def idle(self) -> bool:
        return not any(self.queues) and self.current == [None, None, None]

    def deadlock(self) -> SimError:
        waiting = [c.pc for c in self.current if c is not None]
        if self.pending is not None or self.fence:
            waiting.append(self.pc)
        pc = min(waiting)
        parts = []
        for name, c, done in zip(("load", "compute", "store"), self.current, self.executed):
            if c is not None:
                want = "push" if done else "pop"
                chans = c.pushes if done else c.pops
                parts.append(f"{name} unit at instruction {c.pc} ({BY_OPCODE[c.op].mnemonic}) waits to {want} "
                             + ", ".join(_CHANNEL_NAMES[i] for i in chans))
        if self.pending is not None:
            parts.append(f"dispatcher waits on the full {('load', 'compute', 'store')[self.pending.unit]} "
                         f"queue at instruction {self.pc}")
        elif self.fence:
            parts.append(f"dispatcher waits on the fence at instruction {self.pc}")
        elif self.halted:
            parts.append("dispatcher has halted")
        return self.error(ErrorCode.DEADLOCK, pc, "; ".join(parts))

    # ---- dispatcher ------------------------------------------------------------------------
    def fetch(self, pc: int):
        entry = self.cache.get(pc)
        if entry is None:
            kind, entry = decode_entry(pc, self.words[pc] if pc < len(self.words) else 0, self.config)
            if kind not in ("scalar", "queue"):
                raise self.error(kind, pc, entry)
            self.cache[pc] = entry
        return entry

    def dispatch(self, steps: int = -1) -> bool:
        """Run the dispatcher until it blocks or halts (or for ``steps`` steps); True when it moved."""
        moved = False
        regs, queues, depth, imem = self.regs, self.queues, self.config.queue_depth, self.config.imem_words
        while not self.halted and steps:
            steps -= 1
            if self.pending is not None:
                q = queues[self.pending.unit]
                if len(q) >= depth:
                    return moved
                q.append(self.pending)
                self.pending = None
                self.pc += 1
                moved = True
                continue
            if self.fence:
                if not self.idle():
                    return moved
                self.fence = False
                if self.races is not None:
                    self.races.fence()
                self.pc += 1
                moved = True
                continue
            pc = self.pc
            if self.dispatched >= self.step_limit:
                raise self.error(ErrorCode.STEP_LIMIT, pc, f"no halt after {self.step_limit} dispatched "
                                                           f"instructions (step_limit)")
            if pc >= imem:
                raise self.error(ErrorCode.PC_RANGE, pc, f"fetch outside the instruction memory "
                                                         f"(imem_words={imem})")
            entry = self.fetch(pc)
            moved = True
            if type(entry) is not Prepared:
                self.scalar(entry, pc)
                continue
            try:
                cmd = entry.resolve(regs)
            except AddrRangeError as e:
                raise self.error(ErrorCode.ADDR_RANGE, pc, str(e)) from None
            self.dispatched += 1
            self.pending = cmd
        return moved

    def scalar(self, instr, pc: int) -> None:
        op, regs = instr.op, self.regs
        if op == Opcode.DBNZ:
            rd = instr.args["rd"]
            if rd:
                regs[rd] = (regs[rd] - 1) & MASK32
            if regs[rd]:
                target = instr.args["target"]
                if not 0 <= target < self.config.imem_words:
                    raise self.error(ErrorCode.PC_RANGE, pc, f"dbnz: branch target {target} is outside the "
                                                             f"instruction memory (imem_words="
                                                             f"{self.config.imem_words})")
                self.pc = target
            else:
                self.pc = pc + 1
        elif op == Opcode.SETI:
            if instr.args["rd"]:
                regs[instr.args["rd"]] = instr.args["imm"] & MASK32
            self.pc = pc + 1
        elif op == Opcode.ADDI:
            if instr.args["rd"]:
                regs[instr.args["rd"]] = (regs[instr.args["rs"]] + instr.args["imm"]) & MASK32
            self.pc = pc + 1
        elif op == Opcode.HALT:
            self.halted = True
        elif op == Opcode.FENCE:
            self.fence = True           # pc advances once every unit has drained
        else:                           # NOP
            self.pc = pc + 1
        self.dispatched += 1
        self.counts[op] += 1

    # ---- units -----------------------------------------------------------------------------
    def units(self) -> bool:
        """Run every unit until none can move; True when any did."""
        moved = False
        while True:
            step = False
            for u in (0, 1, 2):
                step |= self.unit(u)
            if not step:
                return moved
            moved = True

    def unit(self, u: int, steps: int = -1) -> bool:
        """Run unit ``u`` until it blocks on a token or its queue is empty (or for ``steps`` steps)."""
        moved = False
        tokens, depth, queue, counts = self.tokens, self.config.token_depth, self.queues[u], self.counts
        cur, executed = self.current[u], self.executed[u]
        while steps:
            steps -= 1                  # each phase is one step, so shuffled runs interleave between them
            if cur is None:
                if not queue:
                    break
                cur, executed = queue.popleft(), False
                moved = True
            elif not executed:
                if any(tokens[ch] == 0 for ch in cur.pops):
                    break
                for ch in cur.pops:
                    tokens[ch] -= 1
                if self.races is not None:
                    self.races.execute(cur)
                cur.execute(self.m, cur)
                counts[cur.op] += 1
                executed = moved = True
            else:
                if any(tokens[ch] >= depth for ch in cur.pushes):
                    break
                for ch in cur.pushes:
                    tokens[ch] += 1
                if self.races is not None:
                    self.races.pushed(cur)
                cur = None
                moved = True
        self.current[u], self.executed[u] = cur, executed
        return moved
