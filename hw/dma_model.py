"""Python models of the data-movement blocks: what the DMA engines compute, and when.

- :func:`load_rows` and :func:`store_rows`: the bit-exact meaning of the load and
  store instructions on numpy arrays (the reference simulator's semantics).
- :func:`row_beats`, :func:`load_timing` and :func:`store_timing`: the cycle
  formulas of :mod:`npuforge.hw.dma_load` and :mod:`npuforge.hw.dma_store` as code,
  for one engine whose DRAM requests are granted in every cycle.
- :func:`dma_timing`: both engines sharing the port through
  :class:`~npuforge.hw.dram_arbiter.DramArbiter`, stepped cycle by cycle (a seed for
  the fast cycle model; it follows the rules of the three modules' docstrings).
- :class:`DramSim`: a fixed-latency, in-order DRAM answering a DRAM port inside an
  ``amaranth.sim`` testbench (the unit tests' stand-in for cosim's HDL DRAM model).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..isa.semantics import requant
from ..isa.spec import BY_OPCODE, Opcode

__all__ = ["DmaOp", "elem_bytes", "row_beats", "load_rows", "store_rows", "load_timing", "store_timing",
           "dma_timing", "DramSim"]


@dataclass(frozen=True)
class DmaOp:
    """One resolved load or store command, as plain Python values (mirrors ``interfaces.DmaCmd``)."""
    op: Opcode
    mem: int
    dram: int
    rows: int
    len: int
    stride: int
    mult: int = 0
    shift: int = 0
    zp: int = 0
    relu: bool = False

    def fields(self) -> dict:
        """The command as a dict for ``DmaCmd.const``."""
        return {"op": self.op, "mem": self.mem, "dram": self.dram, "rows": self.rows, "len": self.len,
                "stride": self.stride, "mult": self.mult, "shift": self.shift, "zp": self.zp,
                "relu": int(self.relu)}


def elem_bytes(op: Opcode) -> int:
    """DRAM bytes per element (the ISA table's: 4 for the int32 transfers, 1 otherwise)."""
    return BY_OPCODE[op].elem_bytes


def row_beats(addr: int, nbytes: int, beat_bytes: int) -> int:
    """Number of DRAM beats the bytes ``[addr, addr + nbytes)`` touch (0 when ``nbytes == 0``)."""
    if nbytes == 0:
        return 0
    return (addr % beat_bytes + nbytes - 1) // beat_bytes + 1


def load_rows(cmd: DmaOp, dram: np.ndarray, config) -> np.ndarray:
    """The rows a load writes: ``(rows, spad_row_bytes)`` int8 for LOAD_SP, ``(rows, cols)`` int32 otherwise.

    Parameters
    ----------
    cmd : DmaOp
        A LOAD_* command.
    dram : ndarray of uint8
        The DRAM image.
    config : HwConfig
    """
    eb = elem_bytes(cmd.op)
    if cmd.op == Opcode.LOAD_SP:
        out = np.zeros((cmd.rows, config.spad_row_bytes), dtype=np.int8)
    else:
        out = np.zeros((cmd.rows, config.cols), dtype=np.int32)
    # LOAD_ACC8 bytes are read as int8 and widen (sign-extend) on assignment into the int32 rows.
    view = "<i4" if cmd.op == Opcode.LOAD_ACC32 else np.int8
    for i in range(cmd.rows):
        a = cmd.dram + i * cmd.stride
        out[i, :cmd.len] = np.asarray(dram[a:a + cmd.len * eb], dtype=np.uint8).view(view)
    return out


def store_rows(cmd: DmaOp, rows: np.ndarray, dram: np.ndarray) -> None:
    """Apply a STORE_* command to ``dram`` in place, reading ``rows`` (the source memory's rows).

    ``rows`` is ``(cmd.rows, width)``: int8 scratchpad rows for STORE_SP, int32
    accumulator rows otherwise.
    """
    for i in range(cmd.rows):
        a = cmd.dram + i * cmd.stride
        if cmd.len == 0:
            continue
        if cmd.op == Opcode.STORE_SP:
            b = np.asarray(rows[i, :cmd.len], dtype=np.int8).view(np.uint8)
        elif cmd.op == Opcode.STORE_ACC32:
            b = np.asarray(rows[i, :cmd.len], dtype="<i4").view(np.uint8)
        else:
            b = requant(np.asarray(rows[i, :cmd.len], dtype=np.int32), cmd.mult, cmd.shift, cmd.zp,
                        cmd.relu).view(np.uint8)
        dram[a:a + len(b)] = b


def _items(cmd: DmaOp, beat_bytes: int, load: bool) -> list[int]:
    """Beats per generator item of a command; 0 marks an item without a DRAM request."""
    if cmd.rows == 0:
        return [0]
    nbytes = cmd.len * elem_bytes(cmd.op)
    if nbytes == 0:
        return [0] * cmd.rows if load else [0]
    return [row_beats(cmd.dram + i * cmd.stride, nbytes, beat_bytes) for i in range(cmd.rows)]


def load_timing(cmds, config, accepts=None):
    """Accept and done cycles of back-to-back load commands on an idle engine whose port is always granted.

    Parameters
    ----------
    cmds : sequence of DmaOp
    config : HwConfig
    accepts : sequence of int, optional
        Earliest cycle each command is offered (``cmd_valid`` rises); default: all offered from cycle 0.

    Returns
    -------
    list of (accept_cycle, done_cycle)
    """
    B, L = config.dram_bytes_per_cycle, config.dram_latency
    out = []
    t_ready = 0                 # first cycle cmd_ready is high again
    last_item = -1              # cycle of the previous command's last item
    p_prev = -1                 # writer cycle of the previous item
    for n, cmd in enumerate(cmds):
        offered = accepts[n] if accepts is not None else 0
        acc = max(offered, t_ready)
        s = max(acc + 1, last_item + 1)
        t_ready = s             # the pending slot empties when the command starts
        items = []              # 1: a DRAM beat, 0: a zero row or a marker
        for nbeats in _items(cmd, B, True):
            items += [1] * nbeats if nbeats else [0]
        for j, is_beat in enumerate(items):
            g = s + j
            p_prev = max(g + 1 + (L if is_beat else 0), p_prev + 1)
        last_item = s + len(items) - 1
        out.append((acc, p_prev + 1))
    return out


def store_timing(cmds, config, requant_latency: int, accepts=None):
    """Accept and done cycles of back-to-back store commands on an idle engine whose port is always granted.

    Parameters
    ----------
    cmds : sequence of DmaOp
    config : HwConfig
    requant_latency : int
        ``LATENCY`` of the store engine's requantiser (``StoreEngine.requant_latency``).
    accepts : sequence of int, optional
        Earliest cycle each command is offered; default: all offered from cycle 0.

    Returns
    -------
    list of (accept_cycle, done_cycle)
    """
    B, Q = config.dram_bytes_per_cycle, requant_latency
    depth = Q + 4
    out = []
    t_ready = 0
    last_item = -1
    pops: list[int] = []        # beat-stage cycle at which each item leaves (its last beat)
    b_next = 0                  # first cycle the beat stage is free
    for n, cmd in enumerate(cmds):
        offered = accepts[n] if accepts is not None else 0
        acc = max(offered, t_ready)
        s = max(acc + 1, last_item + 1)
        g = s - 1
        for nbeats in _items(cmd, B, False):
            k = len(pops)
            g = max(g + 1, s, pops[k - depth] + 1 if k >= depth else 0)
            start = max(g + 2 + Q, b_next)
            pops.append(start + max(nbeats, 1) - 1)
            b_next = pops[-1] + 1
        t_ready = s
        last_item = g
        out.append((acc, pops[-1] + 1))
    return out


def dma_timing(loads, stores, config, requant_latency: int, max_cycles: int = 10_000_000):
    """Accept and done cycles of load and store commands running together on one always-ready DRAM port.

    Each engine is offered its next command in every cycle from cycle 0 (``cmd_valid``
    stays high while commands remain); the arbiter alternates on ties, starting with the
    load engine. The model follows the docstrings of :mod:`~npuforge.hw.dma_load`,
    :mod:`~npuforge.hw.dma_store` and :mod:`~npuforge.hw.dram_arbiter` cycle by cycle.

    Parameters
    ----------
    loads, stores : sequence of DmaOp
    config : HwConfig
    requant_latency : int
    max_cycles : int
        Safety bound; ``RuntimeError`` past it.

    Returns
    -------
    (list of (accept, done) for the loads, list of (accept, done) for the stores)
    """
    B, L, Q = config.dram_bytes_per_cycle, config.dram_latency, requant_latency
    depth = Q + 4
    ld = {"next": 0, "pending": None, "active": [], "p_prev": -1, "out": []}
    st = {"next": 0, "pending": None, "active": [], "inflight": 0, "fifo": [], "kb": 0, "out": []}
    prio_store = False

    def load_items(n):
        items = []
        for nbeats in _items(loads[n], B, True):
            items += [True] * nbeats if nbeats else [False]
        return [(is_beat, n, j == len(items) - 1) for j, is_beat in enumerate(items)]

    def store_items(n):
        items = _items(stores[n], B, False)
        return [(nbeats, n, j == len(items) - 1) for j, nbeats in enumerate(items)]

    t = 0
    while len(ld["out"]) < len(loads) or len(st["out"]) < len(stores) or any(
            d is None for _, d in ld["out"] + st["out"]):
        if t > max_cycles:
            raise RuntimeError(f"dma_timing: not done after {max_cycles} cycles")
        # What each side wants from the port in cycle t.
        l_item = ld["active"][0] if ld["active"] else None
        l_wants = l_item is not None and l_item[0]
        head = st["fifo"][0] if st["fifo"] and st["fifo"][0][0] <= t else None
        s_wants = head is not None and head[1] > 0
        grant_store = s_wants and (not l_wants or prio_store)
        if l_wants or s_wants:
            prio_store = not grant_store

        # Load generator and writer.
        l_fire = l_item is not None and (not l_item[0] or not grant_store)
        if l_fire:
            ld["active"].pop(0)
            ready = t + 1 + (L if l_item[0] else 0)
            ld["p_prev"] = max(ready, ld["p_prev"] + 1)
            if l_item[2]:
                ld["out"][l_item[1]] = (ld["out"][l_item[1]][0], ld["p_prev"] + 1)
        # Store beat stage.
        s_end = False
        if head is not None:
            if head[1] == 0:
                s_end = True
            elif grant_store:
                st["kb"] += 1
                s_end = st["kb"] == head[1]
            if s_end:
                st["fifo"].pop(0)
                st["kb"] = 0
                if head[3]:
                    st["out"][head[2]] = (st["out"][head[2]][0], t + 1)
        # Store reader (credits as counted at the start of the cycle).
        s_issue = bool(st["active"]) and st["inflight"] < depth
        if s_issue:
            nbeats, n, last = st["active"].pop(0)
            st["fifo"].append((t + 2 + Q, nbeats, n, last))
        st["inflight"] += int(s_issue) - int(s_end)
        # Command slots: accept while the pending slot is empty; start when the generator is free.
        for side, cmds, make in ((ld, loads, load_items), (st, stores, store_items)):
            accepted = None
            if side["pending"] is None and side["next"] < len(cmds):
                accepted = side["next"]
                side["next"] += 1
                side["out"].append((t, None))
            if not side["active"]:
                if side["pending"] is not None:
                    side["active"] = make(side["pending"])
                    side["pending"] = None
                elif accepted is not None:
                    side["active"] = make(accepted)
                    accepted = None
            if accepted is not None:
                side["pending"] = accepted
        t += 1
    return ld["out"], st["out"]


class DramSim:
    """A byte-addressed DRAM serving one DRAM port (requester side of ``dram_port_signature``) in amaranth.sim.

    A read accepted in cycle ``t`` is answered (``resp_valid``) in cycle ``t + latency``
    with the bytes as they are after every write accepted up to cycle ``t``; writes apply
    their byte strobes when accepted. ``ready(cycle)`` chooses ``req_ready`` (always 1
    by default), so tests can add back-pressure.

    Call :meth:`drive` at the start of each cycle (after setting the design's other
    inputs is fine too), :meth:`sample` after every input of the cycle is set, then tick.
    """

    def __init__(self, image: np.ndarray, beat_bytes: int, latency: int, ready=None):
        self.mem = np.asarray(image, dtype=np.uint8).copy()
        self.B = beat_bytes
        self.latency = latency
        self.ready = ready or (lambda cycle: True)
        self.pending: dict[int, int] = {}    # cycle -> beat value
        self.accepted: list[tuple[int, bool, int]] = []   # (cycle, write, beat address)

    def drive(self, ctx, port, cycle: int) -> None:
        """Set ``req_ready`` and the response due in ``cycle`` on ``port`` (the design's requester side)."""
        ctx.set(port.req_ready, int(bool(self.ready(cycle))))
        data = self.pending.pop(cycle, None)
        ctx.set(port.resp_valid, data is not None)
        ctx.set(port.resp_rdata, data or 0)

    def sample(self, ctx, port, cycle: int) -> None:
        """Accept the request on ``port`` if ``req_valid & req_ready``: apply a write, schedule a read.

        Raises
        ------
        IndexError
            The beat lies outside the image.
        """
        if not (ctx.get(port.req_valid) and ctx.get(port.req_ready)):
            return
        write = bool(ctx.get(port.req_write))
        beat = ctx.get(port.req_addr)
        base = beat * self.B
        if base + self.B > len(self.mem):
            raise IndexError(f"DRAM beat {beat} at cycle {cycle} is outside the {len(self.mem)}-byte image")
        self.accepted.append((cycle, write, beat))
        if write:
            wdata = ctx.get(port.req_wdata).to_bytes(self.B, "little")
            strb = ctx.get(port.req_wstrb)
            for j in range(self.B):
                if strb >> j & 1:
                    self.mem[base + j] = wdata[j]
        else:
            if cycle + self.latency in self.pending:
                raise AssertionError(f"two responses due in cycle {cycle + self.latency}")
            self.pending[cycle + self.latency] = int.from_bytes(self.mem[base:base + self.B].tobytes(), "little")
