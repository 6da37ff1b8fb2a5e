"""The store engine: STORE_ACC32, STORE_ACC8 and STORE_SP, accumulator / scratchpad -> DRAM.

For each row ``i`` of a command the engine reads row ``mem + i`` and writes its first
``len`` elements to DRAM at ``dram + i*stride``, at any byte alignment, with byte
strobes so that no other byte changes: STORE_ACC32 writes the int32 lanes as
little-endian bytes (the accumulator's bit layout as it is), STORE_ACC8 writes
``requant(lane)`` bytes (:class:`~npuforge.hw.requant.Requant`, parameters from the
command), STORE_SP writes the int8 lanes. ``len == 0`` or ``rows == 0`` writes
nothing and only signals ``done``.

Structure
---------
A *reader* walks the command and emits one **item** per cycle: a row (it reads
the memory in that cycle) or, for a command with ``len == 0`` or ``rows == 0``, a
single marker. Items pass a fixed pipeline of ``1 + Q`` cycles (the memory read,
then ``Q = requant_latency`` cycles, for every op alike, so rows of different ops
stay in order) into a row FIFO of ``D = Q + 4`` entries; a credit counter stops the
reader while ``D`` items are between the reader and the end of the beat stage.
The *beat stage* takes the head row, aligns it to its DRAM address and offers one
write beat per cycle, with the strobes of the bytes it carries. A row whose bytes
touch ``n`` beats costs ``n`` beats (rows never share a beat); a marker costs one
cycle without a request. A second command waits in a one-entry pending slot.

Timing
------
Cycle numbers are absolute. Let ``B = dram_bytes_per_cycle``, ``nbytes = 4*len``
(STORE_ACC32) or ``len``, row ``i`` at ``a_i = dram + i*stride``::

    beats_i = (a_i mod B + nbytes - 1) // B + 1
    items   = rows (each with beats_i beats)   if len > 0 and rows > 0
              1 marker                         otherwise

- ``cmd_ready`` is high while the pending slot is empty. A command accepted in
  cycle ``t`` starts in ``s = max(t + 1, e_prev + 1)``, ``e_prev`` being the cycle of
  the previous command's last item; ``cmd_ready`` is low in ``t+1 .. s-1``.
- The reader emits item ``k`` (counted across commands) in
  ``g_k = max(g_{k-1} + 1, s, x_{k-D} + 1)``, where ``x_j`` is the cycle item ``j``
  leaves the beat stage (the credit rule; ``x_{k-D}`` is absent for ``k < D``).
- The item reaches the beat stage in ``r_k = g_k + 2 + Q``; it starts there in
  ``b_k = max(r_k, x_{k-1} + 1)``. Its beats go out one per cycle from ``b_k``, each
  retried until the arbiter grants it and ``req_ready`` is high; ``x_k`` is the cycle
  its last beat is accepted (a marker: ``x_k = b_k``).
- ``done`` is high in cycle ``x_last + 1``, one cycle after the command's last beat
  is accepted by the DRAM port.
- With the port granted every cycle the credit rule never delays a beat
  (``D = Q + 4`` covers the loop), so an idle engine is done with a command accepted
  in cycle ``t`` in cycle ``t + Q + 3 + sum_i beats_i`` (a marker: ``t + Q + 4``),
  and back-to-back commands are done ``sum_i beats_i`` cycles after each other.

Example: on the 8x8 preset (B = 16, Q = 2) a STORE_ACC32 of 256 rows of 8 int32
(32 bytes, two aligned beats a row) is done ``512 + 2 + 3 = 517`` cycles after it
is accepted.
"""

from amaranth.hdl import Cat, Module, Mux, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.wiring import Out

from ..isa.spec import Opcode
from .interfaces import (ROW_ADDR_BITS, DmaCmd, dma_row_geometry, dram_port_signature, engine_signature,
                         read_port_signature)
from .requant import Requant

__all__ = ["StoreEngine", "STORE_OPS"]

STORE_OPS = (Opcode.STORE_ACC32, Opcode.STORE_ACC8, Opcode.STORE_SP)

_KIND_SP, _KIND_ACC8, _KIND_ACC32 = 0, 1, 2


class StoreEngine(wiring.Component):
    """Executes STORE_ACC32 / STORE_ACC8 / STORE_SP commands (timing in the module docstring).

    Ports
    -----
    cmd, cmd_valid, cmd_ready, done, busy : the engine handshake of :mod:`npuforge.hw.interfaces`
    dram : DRAM port, requester side (through :class:`~npuforge.hw.dram_arbiter.DramArbiter`); writes only
    acc_rd : accumulator read port (``ROW_ADDR_BITS`` x ``32*cols``)
    spad_rd : scratchpad read port (``ROW_ADDR_BITS`` x ``8*spad_row_bytes``)

    Parameters
    ----------
    config : HwConfig
    requant_latency : int
        Pipeline depth of the requantiser, 0..2 (see :class:`~npuforge.hw.requant.Requant`).

    Attributes
    ----------
    requant_latency : int
        ``Q`` in the timing formulas.
    depth : int
        Items the row FIFO holds (``Q + 4``).
    """

    def __init__(self, config, requant_latency: int = Requant.LATENCY):
        self.config = config   # HwConfig has validated dram_bytes_per_cycle (a power of two)
        self._requant = Requant(config.cols, latency=requant_latency)   # validates the latency
        self.requant_latency = self._requant.LATENCY
        self.depth = self.requant_latency + 4
        self.row_bytes, self.max_beats = dma_row_geometry(config)
        super().__init__({
            **engine_signature(DmaCmd).members,
            "dram": Out(dram_port_signature(config)),
            "acc_rd": Out(read_port_signature(ROW_ADDR_BITS, 32 * config.cols)),
            "spad_rd": Out(read_port_signature(ROW_ADDR_BITS, 8 * config.spad_row_bytes)),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self.config
        B = cfg.dram_bytes_per_cycle
        LB = B.bit_length() - 1
        RB, NB, D, Q = self.row_bytes, self.max_beats, self.depth, self.requant_latency
        m.submodules.requant = rq = self._requant

        meta = data.StructLayout({
            "valid": 1, "kind": 2, "beat": 32, "off": max(LB, 1), "nbytes": 11, "nbeats": 11,
            "write": 1, "last": 1,
        })
        entry = data.StructLayout({"meta": meta, "row": 8 * RB})
        m.submodules.rowq = rowq = SyncFIFO(width=entry.size, depth=D)

        # ---- command slots -----------------------------------------------------------------
        p_valid = Signal()
        p_cmd = Signal(DmaCmd)
        act = Signal()
        a_kind = Signal(2)
        a_mem = Signal(16)
        a_addr = Signal(32)
        a_rows = Signal(16)
        a_len = Signal(8)
        a_stride = Signal(24)
        a_mult = Signal(signed(32))
        a_shift = Signal(6)
        a_zp = Signal(signed(8))
        a_relu = Signal()

        accept = Signal()
        m.d.comb += [self.cmd_ready.eq(~p_valid), accept.eq(self.cmd_valid & ~p_valid)]

        # ---- reader ------------------------------------------------------------------------
        inflight = Signal(range(D + 1))      # items emitted and not yet out of the beat stage
        item_end = Signal()
        issue = Signal()
        marker = Signal()
        last_row = Signal()
        nbytes = Signal(11)
        off = Signal(max(LB, 1))
        m.d.comb += [
            marker.eq((a_rows == 0) | (a_len == 0)),
            last_row.eq(a_rows == 1),
            issue.eq(act & (inflight < D)),
            nbytes.eq(Mux(a_kind == _KIND_ACC32, a_len << 2, a_len)),
            off.eq(a_addr[:LB] if LB else 0),
            self.spad_rd.en.eq(issue & ~marker & (a_kind == _KIND_SP)),
            self.acc_rd.en.eq(issue & ~marker & (a_kind != _KIND_SP)),
            self.spad_rd.addr.eq(a_mem),
            self.acc_rd.addr.eq(a_mem),
        ]
        with m.If(issue & ~item_end):
            m.d.sync += inflight.eq(inflight + 1)
        with m.Elif(item_end & ~issue):
            m.d.sync += inflight.eq(inflight - 1)
        with m.If(issue & ~marker):
            m.d.sync += [a_mem.eq(a_mem + 1), a_addr.eq(a_addr + a_stride), a_rows.eq(a_rows - 1)]
        finish = Signal()
        m.d.comb += finish.eq(issue & (marker | last_row))

        def start(cmd):
            kind = Mux(cmd.op == Opcode.STORE_SP, _KIND_SP, Mux(cmd.op == Opcode.STORE_ACC8, _KIND_ACC8, _KIND_ACC32))
            return [act.eq(1), a_kind.eq(kind), a_mem.eq(cmd.mem), a_addr.eq(cmd.dram), a_rows.eq(cmd.rows),
                    a_len.eq(cmd.len), a_stride.eq(cmd.stride), a_mult.eq(cmd.mult), a_shift.eq(cmd.shift),
                    a_zp.eq(cmd.zp), a_relu.eq(cmd.relu)]

        free = Signal()
        m.d.comb += free.eq(~act | finish)
        with m.If(p_valid):
            with m.If(free):
                m.d.sync += start(p_cmd)
                m.d.sync += p_valid.eq(0)
        with m.Elif(accept):
            with m.If(free):
                m.d.sync += start(self.cmd)
            with m.Else():
                m.d.sync += [p_cmd.eq(self.cmd), p_valid.eq(1)]
        with m.Elif(finish):
            m.d.sync += act.eq(0)

        # ---- stage 1: memory data, requantiser input -----------------------------------------
        s1 = Signal(meta)
        q = dict(mult=Signal(signed(32)), shift=Signal(6), zp=Signal(signed(8)), relu=Signal())
        m.d.sync += [
            s1.valid.eq(issue), s1.kind.eq(a_kind), s1.beat.eq(a_addr >> LB), s1.off.eq(off),
            s1.nbytes.eq(Mux(marker, 0, nbytes)),
            s1.nbeats.eq(Mux(marker, 0, ((off + nbytes - 1) >> LB) + 1)),
            s1.write.eq(~marker), s1.last.eq(marker | last_row),
            q["mult"].eq(a_mult), q["shift"].eq(a_shift), q["zp"].eq(a_zp), q["relu"].eq(a_relu),
        ]
        raw = Signal(8 * RB)
        m.d.comb += [
            raw.eq(Mux(s1.kind == _KIND_SP, self.spad_rd.data, self.acc_rd.data)),
            rq.data.eq(self.acc_rd.data), rq.mult.eq(q["mult"]), rq.shift.eq(q["shift"]), rq.zp.eq(q["zp"]),
            rq.relu.eq(q["relu"]), rq.valid.eq(s1.valid),
        ]
        # Every op waits Q cycles, so that an ACC8 row never overtakes or is overtaken by another op's row.
        stage_meta, stage_raw = s1, raw
        for i in range(Q):
            nm, nr = Signal(meta, name=f"d{i + 1}_meta"), Signal(8 * RB, name=f"d{i + 1}_raw")
            m.d.sync += [nm.eq(stage_meta), nr.eq(stage_raw)]
            stage_meta, stage_raw = nm, nr
        push = data.View(entry, rowq.w_data)
        m.d.comb += [
            push.meta.eq(stage_meta),
            push.row.eq(Mux(stage_meta.kind == _KIND_ACC8, rq.result.as_value(), stage_raw)),
            rowq.w_en.eq(stage_meta.valid),
        ]

        # ---- beat stage --------------------------------------------------------------------
        head = data.View(entry, rowq.r_data)
        hm = head.meta
        kb = Signal(11)
        span = 8 * B * NB
        placed = Signal(span)
        m.d.comb += placed.eq(head.row << (hm.off << 3) if LB else head.row)
        strobes = Signal(B * NB)
        m.d.comb += strobes.eq(Cat(*((p >= hm.off) & (p < hm.off + hm.nbytes) for p in range(B * NB))))
        fire = Signal()
        m.d.comb += [
            self.dram.req_valid.eq(rowq.r_rdy & hm.write),
            self.dram.req_write.eq(1),
            self.dram.req_addr.eq(hm.beat + kb),
            self.dram.req_wdata.eq(placed.word_select(kb, 8 * B)),
            self.dram.req_wstrb.eq(strobes.word_select(kb, B)),
            fire.eq(self.dram.req_valid & self.dram.req_ready),
            item_end.eq((fire & (kb == hm.nbeats - 1)) | (rowq.r_rdy & ~hm.write)),
            rowq.r_en.eq(item_end),
        ]
        with m.If(fire):
            m.d.sync += kb.eq(Mux(kb == hm.nbeats - 1, 0, kb + 1))
        m.d.sync += self.done.eq(item_end & hm.last)

        # ---- busy --------------------------------------------------------------------------
        cmds = Signal(16)
        with m.If(accept & ~self.done):
            m.d.sync += cmds.eq(cmds + 1)
        with m.Elif(self.done & ~accept):
            m.d.sync += cmds.eq(cmds - 1)
        m.d.comb += self.busy.eq(cmds != 0)
        return m
