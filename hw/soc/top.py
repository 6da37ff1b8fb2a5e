"""The SoC: NpuCore + on-chip DRAM + a UART host link, the same for every board.

:class:`NpuSoc` is board-independent (ports ``rx``/``tx`` and a status LED vector); the
board tops in :mod:`npuforge.hw.soc.boards` connect it to pins and clocks. The host sees
the memory map of :mod:`npuforge.hw.soc.memmap`; the core sees its DRAM port served by
:class:`~npuforge.hw.soc.dram.OnChipDram` with the DRAM model's timing, so a board run
takes exactly the cycles of the RTL co-simulation.
"""

from __future__ import annotations

from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ..core import NpuCore
from .dram import OnChipDram
from .link import HostLink
from .memmap import SocMap
from .uart import UartRx, UartTx, check_divisor

__all__ = ["NpuSoc", "LED_NAMES"]

LED_NAMES = ("busy", "done", "error", "dram_overrun")


class NpuSoc(wiring.Component):
    """The board-independent SoC.

    Parameters
    ----------
    config : HwConfig
    dram_bytes : int
        On-chip DRAM size (a power of two, at most ``config.dram_bytes``).
    clock_hz : int
        The clock of the ``sync`` domain.
    baud : int
        UART baud rate (``clock_hz / baud`` cycles per bit, at least 4).
    timeout_s : float
        Inter-byte timeout of a request frame.
    with_core : bool
        False builds the link-only bring-up SoC (UART, host link, on-chip DRAM, no NPU core) for a
        board the core does not fit: it checks the flow, the pins and the host driver on the board.

    Ports
    -----
    rx : In(1), tx : Out(1)
        UART pins (idle high).
    leds : Out(4)
        ``LED_NAMES``: busy, done, error (not NONE), DRAM overrun.
    """

    def __init__(self, config, *, dram_bytes: int, clock_hz: int, baud: int, timeout_s: float = 0.1,
                 with_core: bool = True):
        self.config = config
        self.with_core = with_core
        self.divisor = check_divisor(int(clock_hz), int(baud))
        self.map = SocMap.for_config(config, dram_bytes=dram_bytes, clock_hz=int(clock_hz), baud=int(baud),
                                     has_core=with_core)
        self.timeout_cycles = max(16, int(timeout_s * clock_hz))
        super().__init__({"rx": In(1, init=1), "tx": Out(1, init=1), "leds": Out(len(LED_NAMES))})

    def elaborate(self, platform):
        cfg = self.config
        m = Module()
        m.submodules.dram = dram = OnChipDram(cfg, self.map.dram_bytes)
        m.submodules.link = link = HostLink(self.map, self.timeout_cycles)
        m.submodules.uart_rx = urx = UartRx(self.divisor)
        m.submodules.uart_tx = utx = UartTx(self.divisor)
        m.d.comb += [
            urx.rx.eq(self.rx), self.tx.eq(utx.tx),
            link.rx_data.eq(urx.data), link.rx_valid.eq(urx.valid),
            utx.data.eq(link.tx_data), utx.valid.eq(link.tx_valid), link.tx_ready.eq(utx.ready),
            dram.host_addr.eq(link.dram_addr), dram.host_re.eq(link.dram_re), dram.host_we.eq(link.dram_we),
            dram.host_wstrb.eq(link.dram_wstrb), dram.host_wdata.eq(link.dram_wdata),
            link.dram_rdata.eq(dram.host_rdata), link.dram_overrun.eq(dram.overrun),
            dram.clear_overrun.eq(link.clear_overrun),
        ]
        if not self.with_core:
            # Nothing drives the DRAM's core port; the link reports an idle NPU that never ran.
            m.d.comb += self.leds.eq(dram.overrun << 3)
            return m
        m.submodules.core = core = NpuCore(cfg)
        wiring.connect(m, core.dram, dram.bus)
        m.d.comb += [
            core.start.eq(link.start), link.busy.eq(core.busy), link.done.eq(core.done),
            link.error.eq(core.error), link.error_pc.eq(core.error_pc), link.counters.eq(core.counters),
            core.imem_we.eq(link.imem_we), core.imem_addr.eq(link.imem_addr), core.imem_data.eq(link.imem_data),
            self.leds.eq(core.busy | (core.done << 1) | ((core.error.as_value() != 0) << 2) | (dram.overrun << 3)),
        ]
        return m
