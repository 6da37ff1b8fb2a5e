"""NpuCore: dispatcher, queues, tokens, sequencers and the datapath, with counters and errors.

Ports (RTL-D's simulation top and an FPGA SoC connect to these names)
---------------------------------------------------------------------
- ``start`` In(1): a one-cycle pulse. It clears pc, registers, tokens, queues, the
  sequencers, the engines and the counters, and starts a run from instruction 0.
- ``busy`` Out(1): from the cycle after ``start`` until the run ends.
- ``done`` Out(1): a level, high from the end of a run (normal or on an error) until the
  next ``start``.
- ``error`` Out(ErrorCode), ``error_pc`` Out(16): the first error and its instruction
  index (NONE / 0 on a normal run). ``error_pc`` is the index modulo 2**16 (only a fetch
  past the end of a 65536-word instruction memory gives 65536).
- ``imem_we``, ``imem_addr``, ``imem_data``: host write port of the instruction memory (use
  it while not busy). Words past the program must read 0 (as in the reference simulator):
  clear stale words of a longer earlier program.
- ``dram``: the DRAM port (:func:`~npuforge.hw.interfaces.dram_port_signature`).
- ``counters`` Out(:class:`~npuforge.hw.counters.Counters`).

Errors
------
The first error (a dispatch-time check, or DEADLOCK) is latched in the cycle it is
detected and shows on ``error``/``error_pc``/``done`` in the next cycle. From then on the
dispatcher and the sequencers stop (nothing more is dispatched, handed to an engine or
pushed), and the DRAM port's ``req_valid`` is held low, so no DRAM write happens after the
error is reported. Engines may be left mid-command; the next ``start`` resets them. DRAM
read responses still in flight then are dropped: the core counts the read requests the
port accepted and not yet answered, and discards that many responses after a ``start``.

DEADLOCK (isa/execution.py) is the combinational condition: every unit is idle (queue
empty, nothing held, engine idle) or waits on a token with its engine idle, at least one
unit waits, and the dispatcher waits on a full queue, on a ``fence``, or has halted. The
index is the smallest ``wait_pc`` of the waiting units and, when it waits on a full queue
or a fence, the dispatcher's pc. Because a waiting unit's engine is idle and the counters
only change through pops and pushes, the condition holds only in a state that can never
change again, and it is detected in the first cycle of that state.

Timing
------
``start`` in cycle 0; instruction 0 is decoded in cycle 1 (``busy`` high from cycle 1).
A run ends in the first cycle ``T`` in which the dispatcher has halted and every queue is
empty and every unit idle (or an error is detected); ``done`` is high and ``busy`` low
from cycle ``T + 1``; ``counters.cycles = T``.
"""

from amaranth.hdl import Module, Mux, ResetInserter, Signal
from amaranth.lib import wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.wiring import In, Out

from ..isa.spec import INSTRUCTIONS, WORD_BITS, ErrorCode, Queue
from .counters import COUNTER_BITS, Counters, UNITS
from .dispatch import COMPUTE_ENTRY, DMA_ENTRY, Dispatcher, dma_element_bytes
from .interfaces import PC_BITS, ComputeCmd, DmaCmd, dram_port_signature, engine_signature
from .sequencer import Sequencer
from .tokens import Tokens

__all__ = ["NpuCore", "datapath_signature"]

_QUEUES = (Queue.LOAD, Queue.COMPUTE, Queue.STORE)


def datapath_signature(config) -> wiring.Signature:
    """What NpuCore needs from its datapath: three engine handshakes and the DRAM port."""
    return wiring.Signature({
        "load": Out(engine_signature(DmaCmd)),
        "compute": Out(engine_signature(ComputeCmd)),
        "store": Out(engine_signature(DmaCmd)),
        "dram": Out(dram_port_signature(config)),
    })


class NpuCore(wiring.Component):
    """The NPU core (ports in the module docstring).

    Parameters
    ----------
    config : HwConfig
    datapath : callable, optional
        ``datapath(config)`` gives a component with :func:`datapath_signature`; the default
        is :class:`~npuforge.hw.datapath.Datapath` (engines, memories, DRAM arbiter).
        Unit tests pass small stand-ins.
    """

    def __init__(self, config, *, datapath=None):
        self.config = config
        if datapath is None:
            from .datapath import Datapath
            datapath = Datapath
        self._make_datapath = datapath
        super().__init__({
            "start": In(1),
            "busy": Out(1),
            "done": Out(1),
            "error": Out(ErrorCode),
            "error_pc": Out(PC_BITS),
            "imem_we": In(1),
            "imem_addr": In(PC_BITS),
            "imem_data": In(WORD_BITS),
            "dram": Out(dram_port_signature(config)),
            "counters": Out(Counters),
        })

    def elaborate(self, platform):
        cfg = self.config
        m = Module()
        start = self.start
        # Everything but the dispatcher (which handles start itself) restarts from reset on start.
        reset_on_start = ResetInserter({"sync": start})

        m.submodules.dispatcher = disp = Dispatcher(cfg)
        m.d.comb += [disp.start.eq(start), disp.imem_we.eq(self.imem_we), disp.imem_addr.eq(self.imem_addr),
                     disp.imem_data.eq(self.imem_data)]

        m.submodules.tokens = tokens = reset_on_start(Tokens(cfg.token_depth))
        dp = self._make_datapath(cfg)
        m.submodules.datapath = reset_on_start(dp)

        running = Signal()          # busy
        done = Signal()
        err_latched = Signal()
        err_code = Signal(ErrorCode)
        err_pc = Signal(PC_BITS)
        stop = err_latched
        m.d.comb += [self.busy.eq(running), self.done.eq(done), self.error.eq(err_code),
                     self.error_pc.eq(err_pc), disp.stop.eq(stop)]

        seqs = []
        for q, name in zip(_QUEUES, UNITS):
            layout = COMPUTE_ENTRY if q == Queue.COMPUTE else DMA_ENTRY
            cmd_layout = ComputeCmd if q == Queue.COMPUTE else DmaCmd
            fifo = reset_on_start(SyncFIFO(width=layout.size, depth=cfg.queue_depth))
            m.submodules[f"{name}_queue"] = fifo
            seq = Sequencer(q, cmd_layout, cfg.token_depth)
            m.submodules[f"{name}_seq"] = reset_on_start(seq)
            m.d.comb += [
                fifo.w_data.eq(getattr(disp, f"{name}_data")),
                fifo.w_en.eq(getattr(disp, f"{name}_valid")),
                getattr(disp, f"{name}_ready").eq(fifo.w_rdy),
                seq.head.eq(fifo.r_data),
                seq.head_valid.eq(fifo.r_rdy),
                fifo.r_en.eq(seq.head_take),
                seq.can_pop.eq(tokens.can_pop),
                seq.can_push.eq(tokens.can_push),
                seq.count.eq(tokens.count),
                seq.stop.eq(stop),
            ]
            wiring.connect(m, seq.engine, getattr(dp, name))
            seqs.append(seq)
        m.d.comb += [tokens.pop.eq(seqs[0].pop | seqs[1].pop | seqs[2].pop),
                     tokens.push.eq(seqs[0].push | seqs[1].push | seqs[2].push)]

        all_idle = Signal()
        m.d.comb += all_idle.eq(seqs[0].idle & seqs[1].idle & seqs[2].idle)
        m.d.comb += disp.all_idle.eq(all_idle)

        # ---- DRAM port: held off while not running or after an error; stale responses dropped ----
        dram, inner = self.dram, dp.dram
        gate = running & ~err_latched
        m.d.comb += [
            dram.req_valid.eq(inner.req_valid & gate),
            inner.req_ready.eq(dram.req_ready & gate),
            dram.req_write.eq(inner.req_write),
            dram.req_addr.eq(inner.req_addr),
            dram.req_wdata.eq(inner.req_wdata),
            dram.req_wstrb.eq(inner.req_wstrb),
            inner.resp_rdata.eq(dram.resp_rdata),
        ]
        # Reads in flight: at most dram_latency + a few, far below 2**16.
        in_flight = Signal(16)
        drop = Signal(16)
        read_accept = dram.req_valid & dram.req_ready & ~dram.req_write
        write_accept = dram.req_valid & dram.req_ready & dram.req_write
        m.d.sync += in_flight.eq(in_flight + read_accept - dram.resp_valid)
        with m.If(start):
            # Responses still owed for requests of the previous run go nowhere.
            m.d.sync += drop.eq(in_flight - dram.resp_valid)
        with m.Elif(dram.resp_valid & (drop != 0)):
            m.d.sync += drop.eq(drop - 1)
        m.d.comb += inner.resp_valid.eq(dram.resp_valid & (drop == 0) & ~start)

        # ---- errors and deadlock --------------------------------------------------------
        waiting = [s.token_wait for s in seqs]
        units_stuck = (seqs[0].idle | waiting[0]) & (seqs[1].idle | waiting[1]) & (seqs[2].idle | waiting[2])
        deadlock = Signal()
        halt_seen = disp.halted | disp.halting
        m.d.comb += deadlock.eq(running & ~err_latched & (disp.stuck | halt_seen) & units_stuck
                                & (waiting[0] | waiting[1] | waiting[2]))
        dl_pc = Signal(PC_BITS + 1)
        candidates = [(s.token_wait, s.wait_pc) for s in seqs] + [(disp.stuck, disp.stuck_pc)]
        best = Signal(PC_BITS + 1, init=(1 << (PC_BITS + 1)) - 1)
        for i, (valid, pc) in enumerate(candidates):
            nxt = Signal(PC_BITS + 1, name=f"dl_min{i}")
            m.d.comb += nxt.eq(Mux(valid & (pc < best), pc, best))
            best = nxt
        m.d.comb += dl_pc.eq(best)

        finished = Signal()
        m.d.comb += finished.eq(running & halt_seen & all_idle)
        with m.If(running & ~err_latched):
            with m.If(disp.error):
                m.d.sync += [err_latched.eq(1), err_code.eq(disp.error_code), err_pc.eq(disp.error_pc)]
            with m.Elif(deadlock):
                m.d.sync += [err_latched.eq(1), err_code.eq(ErrorCode.DEADLOCK), err_pc.eq(dl_pc)]
        with m.If(running & ((disp.error | deadlock) & ~err_latched | finished)):
            m.d.sync += [running.eq(0), done.eq(1)]
        with m.If(start):
            m.d.sync += [running.eq(1), done.eq(0), err_latched.eq(0), err_code.eq(ErrorCode.NONE),
                         err_pc.eq(0)]

        # ---- performance counters -------------------------------------------------------
        c = self.counters
        counting = running

        def count(field, when, amount=1):
            # `when` enables the register (it is the late signal), the sum starts from registers only.
            reg = getattr(c, field)
            with m.If(start):
                m.d.sync += reg.eq(0)
            with m.Elif(counting & when):
                m.d.sync += reg.eq(reg + amount)

        count("cycles", 1)
        count("instructions", disp.dispatched)
        for name, s in zip(UNITS, seqs):
            count(f"{name}_busy", s.busy)
            count(f"{name}_token_stall", s.token_wait)
        count("dispatch_full_stall", disp.full_stall)
        count("dispatch_fence_stall", disp.stuck & ~disp.full_stall)
        count("dram_read_beats", read_accept)
        count("dram_write_beats", write_accept)
        for field, s in (("dram_read_bytes", seqs[0]), ("dram_write_bytes", seqs[2])):
            cmd = s.engine.cmd
            nbytes = Signal(COUNTER_BITS, name=f"{field}_inc")
            four = Signal(name=f"{field}_four")
            m.d.comb += four.eq(0)
            for op in (spec.op for spec in INSTRUCTIONS if spec.queue == s.queue):
                if dma_element_bytes(op) == 4:
                    with m.If(cmd.op == op):
                        m.d.comb += four.eq(1)
            product = cmd.rows * cmd.len
            m.d.comb += nbytes.eq(Mux(four, product << 2, product))
            count(field, s.accepted, nbytes)
        return m
