"""Will a design point fit a board? Memory estimates from the config, cell counts from Yosys.

Two checks run before place and route (:func:`npuforge.hw.soc.build.build_bitstream`):

1. :func:`memory_plan`, instant, from the config alone: every memory of the SoC with its
   width, depth and copies (a 1W2R scratchpad bank is two 1W1R copies, the 2W3R
   accumulator six plus a live-value table, see :mod:`npuforge.hw.soc.multiport`) and the
   block RAMs it takes in the device's best aspect ratio.
2. :func:`usage_from_stat`, after synthesis: Yosys's cell counts mapped to the device's
   resources (LUTs, flip-flops, block RAM, DSP, SPRAM).

:func:`fit_problems` compares either with the device and says, per resource, what the
design needs against what the device has.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import ceil

from ..dispatch import PREDECODE_BITS
from .dram import latency_ring_depth

__all__ = ["MemoryUse", "memory_plan", "usage_from_stat", "fit_problems", "BRAM_SHAPES"]

# (width, depth) aspect ratios of one block RAM, per family.
BRAM_SHAPES = {
    "ice40": ((16, 256), (8, 512), (4, 1024), (2, 2048)),                       # SB_RAM40_4K
    "ecp5": ((36, 512), (18, 1024), (9, 2048), (4, 4096), (2, 8192), (1, 16384)),  # DP16KD / PDPW16KD
}
SPRAM_SHAPE = (16, 16384)       # iCE40 UP5K SB_SPRAM256KA
SMALL_DEPTH = 16                # memories this shallow become flip-flops or LUT RAM


@dataclass(frozen=True)
class MemoryUse:
    """One memory of the SoC as an FPGA builds it."""
    name: str
    width: int
    depth: int
    copies: int
    ports: str          # the ports the core needs, e.g. "1W2R"
    kind: str           # "BRAM", "SPRAM" or "FF"
    blocks: int         # units of ``kind`` (for FF: bits)

    @property
    def bits(self) -> int:
        return self.width * self.depth * self.copies


def _bram_blocks(family: str, width: int, depth: int) -> int:
    return min(ceil(width / w) * ceil(depth / d) for w, d in BRAM_SHAPES[family])


def memory_plan(config, family: str, dram_bytes: int, *, spram: bool = False,
                with_core: bool = True) -> list[MemoryUse]:
    """The memories of the SoC for ``config`` on a ``family`` device and what each takes.

    Parameters
    ----------
    config : HwConfig
    family : str
        ``ice40`` or ``ecp5``.
    dram_bytes : int
        The SoC's on-chip DRAM.
    spram : bool
        The device has single-port SPRAM (iCE40 UP5K) that can hold the on-chip DRAM.
    with_core : bool
        False: the link-only bring-up SoC (on-chip DRAM only).

    Returns
    -------
    list of MemoryUse
    """
    if family not in BRAM_SHAPES:
        raise ValueError(f"family must be one of {', '.join(BRAM_SHAPES)}, not {family!r}")
    out = []

    def add(name, width, depth, copies, ports, allow_spram=False):
        if depth <= SMALL_DEPTH:
            out.append(MemoryUse(name, width, depth, copies, ports, "FF", width * depth * copies))
        elif allow_spram:
            w, d = SPRAM_SHAPE
            out.append(MemoryUse(name, width, depth, copies, ports, "SPRAM", ceil(width / w) * ceil(depth / d)))
        else:
            out.append(MemoryUse(name, width, depth, copies, ports, "BRAM",
                                 copies * _bram_blocks(family, width, depth)))

    if with_core:
        bank_rows = config.spad_rows // config.spad_banks
        for b in range(config.spad_banks):
            add(f"scratchpad bank {b}", 8 * config.spad_row_bytes, bank_rows, 2, "1W2R")
        add("accumulator", 32 * config.cols, config.acc_rows, 6, "2W3R")
        out.append(MemoryUse("accumulator live-value table", 1, config.acc_rows, 1, "2W3R", "FF", config.acc_rows))
        add("instruction memory", 128, config.imem_words, 1, "1W1R")
        add("instruction predecode", PREDECODE_BITS, config.imem_words, 1, "1W1R")
    beat = config.dram_bytes_per_cycle
    add("on-chip DRAM", 8 * beat, dram_bytes // beat, 1, "1RW", allow_spram=spram)
    if with_core and latency_ring_depth(config.dram_latency):
        add("DRAM latency ring", 8 * beat, latency_ring_depth(config.dram_latency), 1, "1W1R")
    return out


def usage_from_stat(stat: dict, cells: dict) -> tuple[dict, dict]:
    """Device resources used, from Yosys's ``stat -json``.

    Parameters
    ----------
    stat : dict
        The parsed JSON; its ``design`` section (or its only module) gives cell counts by type.
    cells : dict
        Cell type prefix -> resource (``Board.cells``); ECP5 carry cells (``CCU2C``) count two LUTs.

    Returns
    -------
    (dict, dict)
        Resource -> units used, and cell type -> count for cells that map to no resource.
    """
    design = stat.get("design")
    if design is None or "num_cells_by_type" not in design:
        modules = stat.get("modules", {})
        if len(modules) != 1:
            raise ValueError("stat JSON has no design section and not exactly one module")
        design = next(iter(modules.values()))
    used: dict[str, int] = {}
    other: dict[str, int] = {}
    for ctype, n in design["num_cells_by_type"].items():
        name = ctype.lstrip("\\")
        if name == "CCU2C":
            used["LUT"] = used.get("LUT", 0) + 2 * n
            continue
        for prefix, res in cells.items():
            if name.startswith(prefix):
                used[res] = used.get(res, 0) + n
                break
        else:
            other[name] = n
    return used, other


def fit_problems(used: dict, capacity: dict) -> list[str]:
    """One line per resource the design needs more of than the device has (empty: it fits)."""
    return [f"{res}: needs {used[res]}, the device has {capacity.get(res, 0)}"
            for res in sorted(used) if used[res] > capacity.get(res, 0)]


def plan_usage(plan: list[MemoryUse]) -> dict:
    """Block RAM and SPRAM units a memory plan takes."""
    used = {}
    for mem in plan:
        if mem.kind != "FF":
            used[mem.kind] = used.get(mem.kind, 0) + mem.blocks
    return used
