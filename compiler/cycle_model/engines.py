"""Handing a command to an engine in the cycle model: its timing, its counters, its effect.

The compute engine is fully described by two numbers per command (hw/compute.py
``compute_timing`` and ``vquant_bubbles``): ``cmd_ready`` again ``S`` cycles after acceptance
and ``done`` after ``S + L + 1 + vector_stages``, ``S`` counting the command's bubbles. The
DMA engines get their items (:mod:`.dma`). Every accepted command also adds its accesses to
the activity counts (SRAM row reads and writes per memory, array and vector work) that an
energy estimate multiplies by per-access energies, and, when the run computes results, is
executed with the reference simulator's per-instruction code.
"""

from __future__ import annotations

from collections import deque

from ...hw.compute import compute_timing, vquant_bubbles
from ...isa.spec import BY_OPCODE, Opcode
from .dma import dma_items

__all__ = ["ACTIVITY_NAMES", "VECTOR_ROWS", "ComputeTiming", "EngineMixin"]

# Work counted per accepted command (for energy estimates): SRAM row accesses per memory, array
# work, vector rows (all ops, then per op) and requantiser rows. Memory enables as the engines drive them.
ACTIVITY_NAMES = ("spad_reads", "spad_writes", "acc_reads", "acc_writes", "array_macs", "array_rows",
                  "array_weight_rows", "vector_rows", "requant_rows", "vadd_rows", "vmax_rows", "vrelu_rows",
                  "vquant_rows")
# The vector rows of each op apart as well: the ops switch the vector unit very differently.
VECTOR_ROWS = {Opcode.VADD: "vadd_rows", Opcode.VMAX: "vmax_rows", Opcode.VRELU: "vrelu_rows",
               Opcode.VQUANT: "vquant_rows"}


class ComputeTiming:
    """The compute engine's timing: ``cmd_ready`` from ``ready_at`` (the cycle the last slot
    issues), ``done`` cycles queued, and the row that last slot writes if it is a VQUANT slot."""

    __slots__ = ("ready_at", "dones", "config", "quant_row")

    def __init__(self, config):
        self.ready_at = 0
        self.dones = deque()
        self.config = config
        self.quant_row = None


class EngineMixin:
    """Command acceptance of :class:`~npuforge.compiler.cycle_model.machine._Sim`
    (uses ``cfg``, ``activity``, ``comp``, ``load``, ``store``, ``c``, ``B``, ``m``)."""

    def accept(self, u, cmd, t):
        """Engine ``u`` accepts ``cmd`` in cycle ``t``: timing, byte and access counters, functional effect."""
        cfg, act, op, rows = self.cfg, self.activity, cmd.op, cmd.rows
        if u == 1:
            comp = self.comp
            slots, done = compute_timing(cfg, op, rows)
            # The last command's last slot issued in cycle t (accepted back to back) is the one before ours.
            bubbles, comp.quant_row = vquant_bubbles(cfg, op, rows, cmd.src, cmd.dst, cmd.accumulate,
                                                     comp.quant_row if t == comp.ready_at else None)
            comp.ready_at = t + slots + bubbles
            comp.dones.append(t + done + bubbles)
            # Memory enables of hw/compute.py: one scratchpad row per preload / matmul slot,
            # accumulator reads (a: dst for vadd, vmax and accumulating matmuls; b: src for
            # vector ops) and one write per matmul / vector row.
            if op == Opcode.PRELOAD:
                act["spad_reads"] += cfg.rows
                act["array_weight_rows"] += cfg.rows
            elif op == Opcode.MATMUL:
                act["spad_reads"] += rows
                act["acc_writes"] += rows
                act["array_macs"] += rows * cfg.rows * cfg.cols
                act["array_rows"] += rows
                if cmd.accumulate:
                    act["acc_reads"] += rows
            else:
                act["acc_reads"] += rows * (2 if op in (Opcode.VADD, Opcode.VMAX) else 1)
                act["acc_writes"] += rows
                act["vector_rows"] += rows
                act[VECTOR_ROWS[op]] += rows
        else:
            load = u == 0
            count, beats = dma_items(cmd, self.B, load)
            nbytes = rows * cmd.len * BY_OPCODE[op].elem_bytes
            if load:
                self.c["dram_read_bytes"] += nbytes
                act["spad_writes" if op == Opcode.LOAD_SP else "acc_writes"] += rows
                self.load.accept((count, beats is not None), t)
            else:
                self.c["dram_write_bytes"] += nbytes
                if cmd.len:
                    act["spad_reads" if op == Opcode.STORE_SP else "acc_reads"] += rows
                    if op == Opcode.STORE_ACC8:
                        act["requant_rows"] += rows
                self.store.accept(beats if beats is not None else [0], t)
        if self.m is not None:
            cmd.execute(self.m, cmd)
