"""The load engine: LOAD_SP, LOAD_ACC8 and LOAD_ACC32, DRAM -> scratchpad / accumulator.

For each row ``i`` of a command the engine reads the bytes
``[dram + i*stride, dram + i*stride + nbytes)`` (``nbytes = len`` for LOAD_SP and
LOAD_ACC8, ``4*len`` for LOAD_ACC32) at any byte alignment, zeroes the bytes past
``nbytes``, sign-extends each byte for LOAD_ACC8 (LOAD_ACC32 rows are the int32
lanes in little-endian order, which is already the accumulator's bit layout) and
writes the row to ``mem + i``. ``len == 0`` writes zero rows without reading DRAM;
``rows == 0`` writes nothing and only signals ``done``.

Structure
---------
A *generator* walks the command and emits one **item** per cycle: a DRAM read beat
for ``len > 0`` (a row whose bytes touch ``n`` beats costs ``n`` beats, each row
reads its own beats), a zero row for ``len == 0``, or one marker for ``rows == 0``.
With the first beat of a row it pushes a row descriptor into a queue. The read
responses go into a response FIFO; a *writer* takes beats and descriptors in order,
assembles each row and writes it one cycle after its last beat, one row per cycle
at best. Both FIFOs hold ``D = dram_latency + 4`` entries and a credit counter
keeps the response FIFO from overflowing (responses cannot be refused); with
``D`` this large neither ever slows the engine (proof in the timing section).
A second command waits in a one-entry pending slot, so the generator goes from one
command's last item to the next command's first item without a gap.

Timing
------
Cycle numbers are absolute; the DRAM port answers a read accepted in cycle ``t``
with ``resp_valid`` in cycle ``t + L`` (``L = dram_latency``). Let
``B = dram_bytes_per_cycle`` and, for row ``i`` at byte address ``a_i = dram + i*stride``::

    beats_i = (a_i mod B + nbytes - 1) // B + 1          (len > 0)
    items   = sum_i beats_i   if len > 0 and rows > 0
              rows            if len == 0 and rows > 0
              1               if rows == 0

- ``cmd_ready`` is high while the pending slot is empty. A command accepted in
  cycle ``t`` starts in ``s = max(t + 1, e_prev + 1)``, ``e_prev`` being the cycle of
  the previous command's last item; ``cmd_ready`` is low in cycles ``t+1 .. s-1``.
- The generator issues the items in order, at most one per cycle, from ``s``; a
  beat item needs the arbiter's grant and ``req_ready`` (it retries until then).
  With the port granted every cycle, item ``k`` of the command goes out at ``s + k``
  and the last at ``e = s + items - 1``.
- The writer handles item ``j`` (counted across commands) in cycle
  ``p_j = max(r_j, p_{j-1} + 1)`` with ``r_j = g_j + L + 1`` for a beat issued in ``g_j``
  and ``r_j = g_j + 1`` for a zero row or marker. A row is written in cycle
  ``p + 1`` after its last item; ``done`` is high in cycle ``p_last + 1``.
  For beats ``p_j = g_j + L + 1`` always holds (the writer never lags a beat),
  so at most ``L + 2`` beats are ever outstanding, fewer than ``D``: the credit
  and queue limits never stall the generator.
- Hence, on an idle engine with the port granted every cycle, a command accepted
  in cycle ``t`` is done in cycle ``t + items + L + 2`` (``len > 0``) or
  ``t + items + 2`` (``len == 0`` or ``rows == 0``). Back-to-back DRAM-reading
  commands are done ``items`` cycles after each other.

Example: on the 8x8 preset (B = 16, L = 32) a LOAD_SP of 256 rows of 8 bytes at an
aligned address with stride 256 has 256 items and is done 290 cycles after it is
accepted.
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal
from amaranth.lib import data, wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.wiring import Out

from ..isa.spec import Opcode
from .interfaces import (ROW_ADDR_BITS, DmaCmd, dma_row_geometry, dram_port_signature, engine_signature,
                         write_port_signature)

__all__ = ["LoadEngine", "LOAD_OPS"]

LOAD_OPS = (Opcode.LOAD_SP, Opcode.LOAD_ACC8, Opcode.LOAD_ACC32)

_KIND_SP, _KIND_ACC8, _KIND_ACC32 = 0, 1, 2


def _log2(n):
    return n.bit_length() - 1


class LoadEngine(wiring.Component):
    """Executes LOAD_SP / LOAD_ACC8 / LOAD_ACC32 commands (timing in the module docstring).

    Ports
    -----
    cmd, cmd_valid, cmd_ready, done, busy : the engine handshake of :mod:`npuforge.hw.interfaces`
    dram : DRAM port, requester side (through :class:`~npuforge.hw.dram_arbiter.DramArbiter`); reads only
    spad_wr : scratchpad write port (``ROW_ADDR_BITS`` x ``8*spad_row_bytes``)
    acc_wr : accumulator write port (``ROW_ADDR_BITS`` x ``32*cols``)

    Parameters
    ----------
    config : HwConfig

    Attributes
    ----------
    depth : int
        Entries of the response FIFO and the row-descriptor queue (``dram_latency + 4``).
    """

    def __init__(self, config):
        self.config = config   # HwConfig has validated dram_bytes_per_cycle (a power of two)
        self.depth = config.dram_latency + 4
        self.row_bytes, self.max_beats = dma_row_geometry(config)
        super().__init__({
            **engine_signature(DmaCmd).members,
            "dram": Out(dram_port_signature(config)),
            "spad_wr": Out(write_port_signature(ROW_ADDR_BITS, 8 * config.spad_row_bytes)),
            "acc_wr": Out(write_port_signature(ROW_ADDR_BITS, 32 * config.cols)),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self.config
        B = cfg.dram_bytes_per_cycle
        LB = _log2(B)
        RB = self.row_bytes
        NB = self.max_beats
        D = self.depth

        item = data.StructLayout({
            "mem": 16, "nbeats": 11, "off": max(LB, 1), "nbytes": 11, "kind": 2, "write": 1, "last": 1,
        })
        m.submodules.descq = descq = SyncFIFO(width=item.size, depth=D)
        m.submodules.respq = respq = SyncFIFO(width=8 * B, depth=D)

        # ---- command slots -----------------------------------------------------------------
        p_valid = Signal()
        p_cmd = Signal(DmaCmd)
        act = Signal()
        a_kind = Signal(2)
        a_mem = Signal(16)
        a_addr = Signal(32)
        a_rows = Signal(16)        # rows left, the current one included
        a_len = Signal(8)
        a_stride = Signal(24)
        k = Signal(11)             # beat of the current row

        accept = Signal()
        m.d.comb += [self.cmd_ready.eq(~p_valid), accept.eq(self.cmd_valid & ~p_valid)]

        # ---- generator ---------------------------------------------------------------------
        nbytes = Signal(11)
        off = Signal(max(LB, 1))
        nbeats = Signal(11)
        m.d.comb += [
            nbytes.eq(Mux(a_kind == _KIND_ACC32, a_len << 2, a_len)),
            off.eq(a_addr[:LB] if LB else 0),
            nbeats.eq(((off + nbytes - 1) >> LB) + 1),
        ]
        marker = Signal()
        zero = Signal()
        last_row = Signal()
        m.d.comb += [marker.eq(a_rows == 0), zero.eq((a_len == 0) & ~marker), last_row.eq(a_rows == 1)]

        outstanding = Signal(range(D + 1))
        req_fire = Signal()
        beat_pop = Signal()
        m.d.comb += [
            self.dram.req_valid.eq(act & ~marker & ~zero & (outstanding < D) & ((k != 0) | descq.w_rdy)),
            self.dram.req_write.eq(0),
            self.dram.req_addr.eq((a_addr >> LB) + k),
            req_fire.eq(self.dram.req_valid & self.dram.req_ready),
        ]
        with m.If(req_fire & ~beat_pop):
            m.d.sync += outstanding.eq(outstanding + 1)
        with m.Elif(beat_pop & ~req_fire):
            m.d.sync += outstanding.eq(outstanding - 1)

        push = data.View(item, descq.w_data)
        other_fire = Signal()      # a zero row or a marker leaves the generator
        m.d.comb += [
            other_fire.eq(act & (marker | zero) & descq.w_rdy),
            descq.w_en.eq(other_fire | (req_fire & (k == 0))),
            push.mem.eq(a_mem), push.kind.eq(a_kind), push.off.eq(off),
            push.nbytes.eq(Mux(zero | marker, 0, nbytes)),
            push.nbeats.eq(Mux(zero | marker, 0, nbeats)),
            push.write.eq(~marker),
            push.last.eq(marker | last_row),
        ]
        row_end = Signal()
        m.d.comb += row_end.eq((req_fire & (k == nbeats - 1)) | (other_fire & zero))
        with m.If(req_fire):
            m.d.sync += k.eq(Mux(k == nbeats - 1, 0, k + 1))
        with m.If(row_end):
            m.d.sync += [a_mem.eq(a_mem + 1), a_addr.eq(a_addr + a_stride), a_rows.eq(a_rows - 1)]
        finish = Signal()
        m.d.comb += finish.eq((row_end & last_row) | (other_fire & marker))

        def start(cmd):
            kind = Mux(cmd.op == Opcode.LOAD_SP, _KIND_SP, Mux(cmd.op == Opcode.LOAD_ACC8, _KIND_ACC8, _KIND_ACC32))
            return [act.eq(1), a_kind.eq(kind), a_mem.eq(cmd.mem), a_addr.eq(cmd.dram), a_rows.eq(cmd.rows),
                    a_len.eq(cmd.len), a_stride.eq(cmd.stride), k.eq(0)]

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

        # ---- response FIFO -----------------------------------------------------------------
        m.d.comb += [respq.w_en.eq(self.dram.resp_valid), respq.w_data.eq(self.dram.resp_rdata)]

        # ---- writer ------------------------------------------------------------------------
        head = data.View(item, descq.r_data)
        wk = Signal(11)
        buf = Signal(8 * B * NB)
        need_beat = Signal()
        row_done = Signal()
        m.d.comb += [
            need_beat.eq(head.nbeats != 0),
            beat_pop.eq(descq.r_rdy & need_beat & respq.r_rdy),
            row_done.eq(descq.r_rdy & Mux(need_beat, respq.r_rdy & (wk == head.nbeats - 1), 1)),
            respq.r_en.eq(beat_pop),
            descq.r_en.eq(row_done),
        ]
        slots = [Mux(wk == j, respq.r_data, buf[8 * B * j: 8 * B * (j + 1)]) for j in range(NB)]
        assembled = Signal(8 * B * NB)
        m.d.comb += assembled.eq(Cat(*slots))
        with m.If(beat_pop):
            m.d.sync += [buf.eq(assembled), wk.eq(Mux(row_done, 0, wk + 1))]

        shifted = Signal(8 * RB)
        m.d.comb += shifted.eq(assembled >> (head.off << 3) if LB else assembled)
        row = [Mux(j < head.nbytes, shifted[8 * j: 8 * j + 8], 0) for j in range(RB)]
        acc8 = Cat(*(Cat(row[j], Mux(row[j][7], Const(0xFFFFFF, 24), Const(0, 24))) for j in range(cfg.cols)))
        acc32 = Cat(*row[:4 * cfg.cols])
        spad = Cat(*row[:cfg.spad_row_bytes])

        m.d.sync += [
            self.spad_wr.en.eq(row_done & head.write & (head.kind == _KIND_SP)),
            self.acc_wr.en.eq(row_done & head.write & (head.kind != _KIND_SP)),
            self.done.eq(row_done & head.last),
        ]
        with m.If(row_done):
            m.d.sync += [
                self.spad_wr.addr.eq(head.mem), self.spad_wr.data.eq(spad),
                self.acc_wr.addr.eq(head.mem), self.acc_wr.data.eq(Mux(head.kind == _KIND_ACC8, acc8, acc32)),
            ]

        # ---- busy --------------------------------------------------------------------------
        inflight = Signal(16)
        with m.If(accept & ~self.done):
            m.d.sync += inflight.eq(inflight + 1)
        with m.Elif(self.done & ~accept):
            m.d.sync += inflight.eq(inflight - 1)
        m.d.comb += self.busy.eq(inflight != 0)
        return m
