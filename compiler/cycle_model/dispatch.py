"""The dispatcher's side of the cycle model: decoding (cached per pc) and runs of plain scalars.

A plain scalar (``nop``, ``seti``, ``addi``, ``dbnz`` that does not fault) takes one cycle in
decode and touches only the registers and the pc (docs/timing.md section 2), so the
dispatcher may execute a run of them ahead of the rest of the machine: nothing else reads
or writes what they change, and nothing they wait on exists.
"""

from __future__ import annotations

from ...isa.refsim_units import MASK32, SCALAR_OPS, decode_entry
from ...isa.spec import Opcode

__all__ = ["DispatchMixin", "SCALAR_OPS"]



class DispatchMixin:
    """Decoding and scalar runs of :class:`~npuforge.compiler.cycle_model.machine._Sim`
    (uses ``words``, ``cfg``, ``cache``, ``regs``, ``pc``, ``c``, ``max_cycles``)."""

    def decode_at(self, pc):
        """(kind, entry): kind 'scalar' / 'queue' / an ErrorCode; cached per pc."""
        got = self.cache.get(pc)
        if got is None:
            got = decode_entry(pc, self.words[pc] if pc < len(self.words) else 0, self.cfg)
            self.cache[pc] = got
        return got

    def scalar_run(self, t):
        """Dispatch plain scalars (nop, seti, addi, dbnz) one per cycle from cycle ``t``.

        They touch nothing but the registers and the pc, so the dispatcher may run ahead of
        the rest of the machine; returns the first cycle whose instruction needs the machine
        (a queue instruction, ``fence``, ``halt`` or an error), when it is evaluated again.
        """
        regs, cache, c = self.regs, self.cache, self.c
        imem, limit = self.cfg.imem_words, self.max_cycles
        n = 0
        while t <= limit:
            pc = self.pc
            if pc >= imem:
                break
            kind, instr = cache.get(pc) or self.decode_at(pc)
            if kind != "scalar":
                break
            op = instr.op
            if op == Opcode.DBNZ:
                rd = instr.args["rd"]
                val = (regs[rd] - 1) & MASK32
                if rd != 0 and val != 0:
                    target = instr.args["target"]
                    if not 0 <= target < imem:
                        break
                    regs[rd] = val
                    self.pc = target
                else:
                    if rd:
                        regs[rd] = val
                    self.pc = pc + 1
            elif op == Opcode.ADDI:
                if instr.args["rd"]:
                    regs[instr.args["rd"]] = (regs[instr.args["rs"]] + instr.args["imm"]) & MASK32
                self.pc = pc + 1
            elif op == Opcode.SETI:
                if instr.args["rd"]:
                    regs[instr.args["rd"]] = instr.args["imm"] & MASK32
                self.pc = pc + 1
            elif op == Opcode.NOP:
                self.pc = pc + 1
            else:
                break
            n += 1
            t += 1
        c["instructions"] += n
        return t
