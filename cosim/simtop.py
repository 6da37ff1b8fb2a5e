"""The simulation top: NpuCore + the DRAM model + a program loader, all simulation-only glue.

:class:`SimTop` never enters the synthesizable core; it surrounds it with what a test
bench needs so that the hardware runs free and Python only waits for ``finished``:

- the DRAM model (:class:`~npuforge.cosim.dram_model.DramModel`) on the core's DRAM port;
- a program ROM (``npuforge_simmem``, loaded from ``prog.bin``) and a loader that, on
  ``go``, copies the first ``prog_words`` words into the core's instruction memory through
  its host write port, then pulses ``start``. Words past the program must read zero (as
  the reference simulator assumes): the bench sets ``prog_words`` to the program's length
  when the test bench zeroes the instruction memory on ``load``, else to ``imem_words``;
- a watchdog: a run still going after ``max_cycles`` cycles stops with ``timed_out``.

Sequence seen from the bench: pulse ``rst`` (a run stopped by an error may have left an
engine writing), pulse ``load`` (loads ``dram_in.bin`` and ``prog.bin``; the Verilog test
bench also zeroes the core's memories), pulse ``go``, wait for ``finished``,
read ``error``/``error_pc``/``counters``, pulse ``dump`` (writes the DRAM beats written
since the load to ``dram_out.hex``; ``dram_wr_lo``/``dram_wr_hi`` give their range).

Timing: the loader takes ``min(prog_words, imem_words) + 2`` cycles before ``start``;
none of it is in ``counters.cycles`` (the core counts from its ``start``).
"""

from __future__ import annotations

from amaranth.hdl import ClockSignal, Instance, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ..hw.counters import COUNTER_BITS, Counters
from ..hw.interfaces import PC_BITS
from ..isa.spec import WORD_BITS, ErrorCode
from .dram_model import SIMMEM_MODULE, DramModel, dram_geometry

__all__ = ["SimTop", "TOP_NAME", "PROG_FILE", "DRAM_IN_FILE", "DRAM_OUT_FILE"]

TOP_NAME = "npuforge_simtop"
PROG_FILE = "prog.bin"
DRAM_IN_FILE = "dram_in.bin"
DRAM_OUT_FILE = "dram_out.hex"


class SimTop(wiring.Component):
    """NpuCore with the simulation's DRAM and program loader (ports in the module docstring).

    Parameters
    ----------
    config : HwConfig
    core : callable, optional
        ``core(config)`` gives the core; default :class:`~npuforge.hw.core.NpuCore`.
    """

    def __init__(self, config, *, core=None):
        if core is None:
            from ..hw.core import NpuCore
            core = NpuCore
        self.config = config
        self._make_core = core
        abits = dram_geometry(config)[2]
        super().__init__({
            "load": In(1),
            "go": In(1),
            "dump": In(1),
            "max_cycles": In(COUNTER_BITS),
            "prog_words": In(PC_BITS + 1),
            "finished": Out(1),
            "timed_out": Out(1),
            "error": Out(ErrorCode),
            "error_pc": Out(PC_BITS),
            "counters": Out(Counters),
            "dram_wr_lo": Out(abits + 1),
            "dram_wr_hi": Out(abits + 1),
        })

    def elaborate(self, platform):
        cfg = self.config
        m = Module()
        m.submodules.core = core = self._make_core(cfg)
        m.submodules.dram = dram = DramModel(cfg, file_in=DRAM_IN_FILE, file_out=DRAM_OUT_FILE)
        wiring.connect(m, core.dram, dram.bus)
        m.d.comb += [
            dram.load.eq(self.load), dram.dump.eq(self.dump),
            self.dram_wr_lo.eq(dram.wr_lo), self.dram_wr_hi.eq(dram.wr_hi),
            self.error.eq(core.error), self.error_pc.eq(core.error_pc), self.counters.eq(core.counters),
        ]

        words = cfg.imem_words
        abits = max(1, (words - 1).bit_length())
        rom_addr = Signal(abits + 1)
        rom_en = Signal()
        rom_data = Signal(WORD_BITS)
        m.submodules.prog_rom = Instance(
            SIMMEM_MODULE,
            p_WIDTH=WORD_BITS, p_DEPTH=words, p_ABITS=abits, p_FILE_IN=PROG_FILE, p_FILE_OUT="prog_out.hex",
            i_clk=ClockSignal(), i_addr=rom_addr[:abits], i_en=rom_en, i_we=0, i_wdata=0, i_wstrb=0,
            o_rdata=rom_data, i_load=self.load, i_dump=0,
        )

        # The ROM answers one cycle after en: the word read in cycle k is written in k+1.
        write_pending = Signal()
        write_addr = Signal(abits + 1)
        m.d.sync += write_pending.eq(0)
        m.d.comb += [core.imem_we.eq(write_pending), core.imem_addr.eq(write_addr),
                     core.imem_data.eq(rom_data)]

        run_cycles = Signal(COUNTER_BITS)
        count = Signal(abits + 1)
        m.d.comb += count.eq(Mux(self.prog_words > words, words, self.prog_words))
        with m.FSM():
            with m.State("IDLE"):
                with m.If(self.go):
                    m.d.sync += [rom_addr.eq(0), self.finished.eq(0), self.timed_out.eq(0)]
                    m.next = "COPY"
            with m.State("COPY"):
                with m.If(rom_addr < count):
                    m.d.comb += rom_en.eq(1)
                    m.d.sync += [rom_addr.eq(rom_addr + 1), write_addr.eq(rom_addr), write_pending.eq(1)]
                with m.Else():
                    # The last word is written in this cycle, before start.
                    m.next = "START"
            with m.State("START"):
                m.d.comb += core.start.eq(1)
                m.d.sync += run_cycles.eq(0)
                m.next = "RUN"
            with m.State("RUN"):
                m.d.sync += run_cycles.eq(run_cycles + 1)
                with m.If(core.done):
                    m.d.sync += self.finished.eq(1)
                    m.next = "IDLE"
                with m.Elif(run_cycles >= self.max_cycles):
                    m.d.sync += [self.finished.eq(1), self.timed_out.eq(1)]
                    m.next = "IDLE"
        return m
