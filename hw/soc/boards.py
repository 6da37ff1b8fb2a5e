"""Boards: each one's device, capacities, clocking and pins, and the board top around :class:`NpuSoc`.

A :class:`Board` row says everything the build flow (:mod:`npuforge.hw.soc.build`) and
the fit check need: the amaranth-boards platform, the device's resources as Yosys
counts them (cell types per resource), the input clock, the default design point and
on-chip DRAM size. :func:`make_platform` returns the board's platform with
``npuforge_memory = "fpga"``, so the core's multi-port memories are built from block RAM
(:mod:`npuforge.hw.soc.multiport`).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field

from amaranth.hdl import ClockDomain, ClockSignal, Elaboratable, Instance, Module, Signal
from amaranth.lib import io
from amaranth.lib.cdc import ResetSynchronizer

from .top import NpuSoc

__all__ = ["Board", "BOARDS", "BoardTop", "make_platform", "get_board", "ecp5_pll_params"]


@dataclass(frozen=True)
class Board:
    """One supported board."""
    name: str
    platform: str                 # "module:Class" of amaranth-boards
    family: str                   # "ice40" or "ecp5"
    device: str
    capacity: dict                # resource -> units on the device
    cells: dict                   # Yosys cell type (prefix match) -> resource
    bitstream: str                # file the flow leaves
    input_clock_hz: int
    default_config: str           # path relative to the repository
    dram_bytes: int               # default on-chip DRAM
    led_count: int                # board LEDs used for busy, done, error, overrun
    synth_opts: tuple = field(default=())
    pll: bool = False             # derive the core clock from the input clock with a PLL
    soft_multiply_bits: int = 0   # multiplies with both operands at most this wide go to LUTs, not DSPs
    nextpnr_opts: tuple = field(default=())   # extra nextpnr arguments (e.g. the router)
    seed: int = 1                 # nextpnr's first placement seed (the flow tries the next on a router2 stall)
    # nextpnr arguments that place and route one block alone, its ports left unplaced (out of
    # context): the per-block Fmax of --breakdown. Empty where the family's nextpnr cannot (iCE40).
    block_pnr_args: tuple = field(default=())
    notes: str = ""

    def yosys_before_synth(self) -> str:
        """Yosys commands run between reading the design and ``synth_<family>``.

        With ``soft_multiply_bits``, narrow multiplies (the array's int8 x int8) are built as
        Booth multipliers in LUTs (Yosys ``booth``), which keeps the DSPs for the requantisers'
        wide products. On the ECP5-85F the 8x8 point otherwise uses 132 of 156 MULT18X18D; with
        68 its post-placement Fmax estimate rose from 22.1 to 26.1 MHz (docs/fpga.md).
        """
        if not self.soft_multiply_bits:
            return ""
        n = self.soft_multiply_bits
        return f"proc; booth t:$mul r:A_WIDTH<={n} %i r:B_WIDTH<={n} %i"


BOARDS: dict[str, Board] = {
    "icebreaker": Board(
        name="icebreaker", platform="amaranth_boards.icebreaker:ICEBreakerPlatform", family="ice40",
        device="iCE40UP5K-SG48",
        capacity={"LUT": 5280, "FF": 5280, "BRAM": 30, "SPRAM": 4, "DSP": 8},
        cells={"SB_LUT4": "LUT", "SB_DFF": "FF", "SB_RAM40_4K": "BRAM", "SB_SPRAM256KA": "SPRAM",
               "SB_MAC16": "DSP"},
        bitstream="top.bin", input_clock_hz=12_000_000, default_config="configs/icebreaker-4x4.yaml",
        dram_bytes=8192, led_count=2, synth_opts=("-dsp",),
        notes="BRAM = 4 Kbit EBR; DSP = SB_MAC16 (16x16). The on-chip DRAM is in EBR: Yosys 0.70 does not map "
              "its read + byte-write port pair to the single-port SPRAM"),
    "ulx3s": Board(
        name="ulx3s", platform="amaranth_boards.ulx3s:ULX3S_85F_Platform", family="ecp5",
        device="LFE5U-85F-6BG381C",
        capacity={"LUT": 83640, "FF": 83640, "BRAM": 208, "DSP": 156},
        cells={"LUT4": "LUT", "TRELLIS_FF": "FF", "DP16KD": "BRAM", "PDPW16KD": "BRAM", "MULT18X18D": "DSP",
               "TRELLIS_DPR16X4": "LUT"},
        bitstream="top.bit", input_clock_hz=25_000_000, default_config="configs/ulx3s-8x8.yaml",
        dram_bytes=65536, led_count=4, pll=True, soft_multiply_bits=9,
        # On the 8x8 point router1 does not converge, nor router2 on heap's placement (docs/fpga.md).
        nextpnr_opts=("--router", "router2", "--placer", "static"),
        # The first seed that routes the 8x8 point's netlist: 1 since the on-chip DRAM registers its request
        # (3 stalls there; from 7aad3f3 to then 1 and 2 stalled and 3 routed: docs/fpga.md).
        seed=1,
        block_pnr_args=("--85k", "--package", "CABGA381", "--speed", "6", "--out-of-context"),
        notes="BRAM = 18 Kbit DP16KD; DSP = MULT18X18D; a TRELLIS_DPR16X4 (distributed RAM) is counted as LUTs"),
}


def get_board(name: str) -> Board:
    """The board called ``name``.

    Raises
    ------
    ValueError
        Naming the supported boards.
    """
    if name not in BOARDS:
        raise ValueError(f"unknown board {name!r}; boards: {', '.join(BOARDS)}")
    return BOARDS[name]


def make_platform(board: Board):
    """An instance of the board's amaranth-boards platform that asks for FPGA memories.

    Raises
    ------
    ImportError
        When amaranth-boards is not installed (the ``fpga`` extra).
    """
    module, name = board.platform.split(":")
    try:
        cls = getattr(importlib.import_module(module), name)
    except ImportError as e:
        raise ImportError(f"board {board.name} needs amaranth-boards: pip install -e '.[fpga]' ({e})") from None
    return type(f"Npu{name}", (cls,), {"npuforge_memory": "fpga"})()


def ecp5_pll_params(f_in: float, f_out: float) -> dict:
    """EHXPLLL dividers for ``f_out`` from ``f_in`` (feedback from CLKOP), exact to 0.1 %.

    Raises
    ------
    ValueError
        When no divider set reaches ``f_out`` with the VCO in 400..800 MHz and the phase
        detector at or above 3.125 MHz.
    """
    best = None
    for clki in range(1, 129):
        pfd = f_in / clki
        if pfd < 3.125e6:
            break
        for fb in range(1, 81):
            out = pfd * fb
            err = abs(out - f_out) / f_out
            for op in range(1, 129):
                vco = out * op
                # Prefer an exact output, then a VCO near the middle of its range.
                if 400e6 <= vco <= 800e6 and (best is None or (err, abs(vco - 600e6)) < best[0]):
                    best = ((err, abs(vco - 600e6)), clki, fb, op)
    if best is None or best[0][0] > 1e-3:
        raise ValueError(f"the ECP5 PLL cannot make {f_out / 1e6:g} MHz from {f_in / 1e6:g} MHz")
    _, clki, fb, op = best
    return {"CLKI_DIV": clki, "CLKFB_DIV": fb, "CLKOP_DIV": op, "CLKOP_CPHASE": op // 2 - 1 if op > 1 else 0}


class BoardTop(Elaboratable):
    """The SoC on a board: clock (and PLL), reset, UART pins and LEDs.

    Parameters
    ----------
    board : Board
    config : HwConfig
    clock_hz : int
        The core clock: the input clock, or (boards with ``pll``) made from it.
    baud : int
    dram_bytes : int
    with_core : bool
        False: the link-only bring-up SoC (see :class:`NpuSoc`).
    """

    def __init__(self, board: Board, config, *, clock_hz: int, baud: int, dram_bytes: int, with_core: bool = True):
        if not board.pll and clock_hz != board.input_clock_hz:
            raise ValueError(f"{board.name} runs the core from its {board.input_clock_hz / 1e6:g} MHz oscillator "
                             f"(no PLL in this SoC); requested {clock_hz / 1e6:g} MHz")
        self.board = board
        self.clock_hz = int(clock_hz)
        self.soc = NpuSoc(config, dram_bytes=dram_bytes, clock_hz=clock_hz, baud=baud, with_core=with_core)

    def elaborate(self, platform):
        m = Module()
        board = self.board
        if board.pll:
            m.domains.sync = ClockDomain("sync")
            m.submodules.clk_buf = clk_in = io.Buffer("i", platform.request(platform.default_clk, dir="-"))
            params = ecp5_pll_params(board.input_clock_hz, self.clock_hz)
            locked = Signal()
            m.submodules.pll = Instance(
                "EHXPLLL",
                a_FREQUENCY_PIN_CLKI=str(board.input_clock_hz // 1_000_000),
                a_FREQUENCY_PIN_CLKOP=f"{self.clock_hz / 1e6:g}",
                a_ICP_CURRENT="12", a_LPF_RESISTOR="8", a_MFG_ENABLE_FILTEROPAMP="1", a_MFG_GMCREF_SEL="2",
                p_PLLRST_ENA="DISABLED", p_INTFB_WAKE="DISABLED", p_STDBY_ENABLE="DISABLED",
                p_DPHASE_SOURCE="DISABLED", p_OUTDIVIDER_MUXA="DIVA", p_CLKOP_ENABLE="ENABLED",
                p_CLKOP_FPHASE=0, p_FEEDBK_PATH="CLKOP",
                **{f"p_{k}": v for k, v in params.items()},
                i_RST=0, i_STDBY=0, i_CLKI=clk_in.i, o_CLKOP=ClockSignal("sync"), i_CLKFB=ClockSignal("sync"),
                i_PHASESEL0=0, i_PHASESEL1=0, i_PHASEDIR=0, i_PHASESTEP=0, i_PHASELOADREG=0,
                i_PLLWAKESYNC=0, i_ENCLKOP=0, o_LOCK=locked)
            # nextpnr derives the 'sync' constraint from the input clock's through the PLL's dividers
            # (a FREQUENCY on the PLL's output net would name a net that does not survive synthesis).
            m.submodules.reset_sync = ResetSynchronizer(~locked, domain="sync")
        m.submodules.soc = soc = self.soc
        uart = platform.request("uart", 0, dir="-")
        m.submodules.uart_rx_buf = rx = io.Buffer("i", uart.rx)
        m.submodules.uart_tx_buf = tx = io.Buffer("o", uart.tx)
        m.d.comb += [soc.rx.eq(rx.i), tx.o.eq(soc.tx)]
        for i in range(min(board.led_count, len(soc.leds))):
            m.submodules[f"led_buf{i}"] = led = io.Buffer("o", platform.request("led", i, dir="-"))
            m.d.comb += led.o.eq(soc.leds[i])
        return m
