"""Where the resources (and the clock) go: each block of the SoC synthesised on its own.

Yosys's hierarchical (``-noflatten``) ABC9 flow failed under YoWASP 0.70 on this design, so
each block is converted and synthesised separately (flattened, RTLIL as the build gives it,
the same steps and ``synth_<family>`` options as the build). The sum is close to, not equal
to, the whole design: flattening optimises across block boundaries. Used by ``npuforge
bitstream --breakdown`` to say what a design point spends its LUTs, flip-flops, block RAM
and DSPs on (above all one that does not fit).

On a board whose nextpnr can place a block out of context (the ECP5), each block is also
placed and routed alone against the requested clock. Its Fmax alone is an upper bound on
what it reaches inside the SoC (no routing to the rest of the chip): a block below the
requested clock has to change before the whole design can meet it.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

from .boards import Board
from .fit import usage_from_stat
from .multiport import FpgaStandIn
from .report import critical_path

__all__ = ["block_breakdown", "render_breakdown"]


def hash_text(text: str) -> str:
    import hashlib
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _blocks(config, board: Board, dram_bytes: int):
    """(name, how many in the SoC, component) for every block worth counting."""
    from amaranth.lib.fifo import SyncFIFO
    from ..compute import ComputeEngine
    from ..datapath import acc_read_latency
    from ..dispatch import COMPUTE_ENTRY, DMA_ENTRY, Dispatcher
    from ..dma_load import LoadEngine
    from ..dma_store import StoreEngine
    from ..dram_arbiter import DramArbiter
    from ..interfaces import DmaCmd
    from ..memories import Accumulator, Scratchpad
    from ..sequencer import Sequencer
    from ..tokens import Tokens
    from ...isa.spec import Queue
    from .dram import OnChipDram
    from .link import HostLink
    from .memmap import SocMap
    from .uart import UartRx, UartTx
    smap = SocMap.for_config(config, dram_bytes=dram_bytes, clock_hz=board.input_clock_hz, baud=115200)
    divisor = board.input_clock_hz // 115200
    return [
        ("dispatcher", 1, lambda: Dispatcher(config)),
        ("compute engine (array, vector unit, requant)", 1,
         lambda: ComputeEngine(config, acc_read_latency=acc_read_latency(FpgaStandIn()))),
        ("load engine", 1, lambda: LoadEngine(config)),
        ("store engine (with requant)", 1, lambda: StoreEngine(config)),
        ("scratchpad", 1, lambda: Scratchpad(config)),
        ("accumulator", 1, lambda: Accumulator(config, compute_read_latency=acc_read_latency(FpgaStandIn()))),
        ("DRAM arbiter", 1, lambda: DramArbiter(config)),
        ("sequencer (each of 3)", 3, lambda: Sequencer(Queue.LOAD, DmaCmd, config.token_depth)),
        ("compute queue FIFO", 1, lambda: SyncFIFO(width=COMPUTE_ENTRY.size, depth=config.queue_depth)),
        ("load/store queue FIFO (each of 2)", 2, lambda: SyncFIFO(width=DMA_ENTRY.size, depth=config.queue_depth)),
        ("tokens", 1, lambda: Tokens(config.token_depth)),
        ("host link", 1, lambda: HostLink(smap, 1 << 20)),
        ("on-chip DRAM", 1, lambda: OnChipDram(config, dram_bytes)),
        ("UART rx + tx", 1, lambda: _Pair(UartRx(divisor), UartTx(divisor))),
    ]


class _Pair:
    """Two small components synthesised together."""

    def __init__(self, a, b):
        from amaranth.hdl import Elaboratable

        class _P(Elaboratable):
            def elaborate(self, platform):
                from amaranth.hdl import Module
                m = Module()
                m.submodules.a, m.submodules.b = a, b
                return m
        self.top = _P()
        self.ports = [a.rx, a.data, a.valid, a.error, b.tx, b.data, b.valid, b.ready]


def block_breakdown(config, board: Board, dram_bytes: int, work_dir, env: dict, clock_mhz: float | None = None,
                    only=None) -> list[dict]:
    """Synthesise every block and return its resources (and, where the board can, its Fmax alone).

    Parameters
    ----------
    config : HwConfig
    board : Board
    dram_bytes : int
    work_dir : path
        RTLIL, logs, netlists and stat files go here.
    env : dict
        The flow's environment (:func:`npuforge.hw.soc.build.tool_env`).
    clock_mhz : float, optional
        With a board that has ``block_pnr_args`` (the ECP5), each block is also placed and
        routed alone (nextpnr out of context) against this clock: which blocks limit Fmax.
    only : collection of str, optional
        The names of the blocks to do (default: all).

    Raises
    ------
    ValueError
        ``only`` names a block the SoC does not have (the message lists the blocks).

    Returns
    -------
    list of dict
        ``{"block", "count", "per_block": {resource: units}, "total": {...}, "synth_s"}``, with
        ``fmax_mhz``, ``critical_path`` and ``pnr_s`` when the block was placed and routed, and
        ``source`` when it was synthesised from Verilog because Yosys failed on its RTLIL.
    """
    from amaranth.back import rtlil, verilog
    os.environ["AMARANTH_USE_YOSYS"] = "builtin"
    blocks = _blocks(config, board, dram_bytes)
    unknown = set(only or ()) - {name for name, _, _ in blocks}
    if unknown:
        raise ValueError(f"no block named {', '.join(map(repr, sorted(unknown)))}; blocks: "
                         + ", ".join(repr(name) for name, _, _ in blocks))
    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, (name, count, make) in enumerate(blocks):
        if only is not None and name not in only:
            continue
        got = _synthesise(work, f"blk{i}", _convert(make(), f"blk{i}", rtlil), ".il", board, env, clock_mhz)
        if "failed" in got:
            # Yosys 0.70 trips internal assertions (in ABC's reintegration) on some blocks read alone from
            # RTLIL; from Verilog they pass, but there the int8 products are sign-extended to 16 bits and
            # the soft-multiply step would miss them, hence RTLIL first.
            again = _synthesise(work, f"blk{i}v", _convert(make(), f"blk{i}v", verilog), ".v", board, env, clock_mhz)
            if "failed" not in again:
                got = dict(again, source="Verilog (Yosys failed on the RTLIL)")
        if "failed" in got:
            rows.append({"block": name, "count": count, "per_block": {}, "total": {}, "synth_s": None, **got})
            continue
        rows.append({"block": name, "count": count, **got,
                     "total": {k: v * count for k, v in got["per_block"].items()}})
    return rows


def _convert(comp, name, backend) -> str:
    """One block as RTLIL or Verilog (``backend``: amaranth's ``rtlil`` or ``verilog``)."""
    kwargs = {"name": name, "platform": FpgaStandIn(), "emit_src": False}
    if isinstance(comp, _Pair):
        return backend.convert(comp.top, ports=comp.ports, **kwargs)
    if not hasattr(comp, "signature"):          # a FIFO: an Elaboratable with named ports
        ports = [getattr(comp, n) for n in ("w_data", "w_en", "w_rdy", "w_level", "r_data", "r_en", "r_rdy",
                                             "r_level")]
        return backend.convert(comp, ports=ports, **kwargs)
    return backend.convert(comp, **kwargs)


def _synthesise(work: Path, stem: str, text: str, suffix: str, board: Board, env: dict, clock_mhz) -> dict:
    """Synthesise one block (files ``work/stem.*``) and, on a board that can, place and route it alone.

    Cached: a block whose source, script and nextpnr arguments are unchanged is not run again
    (nor is one whose synthesis failed on the same input).
    Returns ``per_block``, ``synth_s`` (and ``pnr_s``, ``fmax_mhz``, ``critical_path``, or
    ``pnr_failed``), or ``failed`` when Yosys failed.
    """
    timed = bool(board.block_pnr_args) and clock_mhz is not None
    source, stat, netlist, pnr_report, keyfile = (work / f"{stem}{e}" for e in (
        suffix, ".stat.json", ".json", ".report.json", ".key"))
    reader = {".il": "read_rtlil", ".v": "read_verilog"}[suffix]
    steps = [f"{reader} {source.name}", board.yosys_before_synth(),
             f"synth_{board.family} {' '.join(board.synth_opts)} -top {stem}", f"tee -q -o {stat.name} stat -json",
             f"write_json {netlist.name}" if timed else ""]
    script = "; ".join(step for step in steps if step)
    pnr_cmd = ([env[f"NEXTPNR_{board.family.upper()}"], *board.block_pnr_args, "--json", netlist.name,
                "--freq", f"{clock_mhz:g}", "--seed", "1", "--timing-allow-fail", "--report", pnr_report.name,
                "-l", f"{stem}.pnr.log", "-q"] if timed else [])
    key = hash_text(text + script + " ".join(pnr_cmd[1:]))
    outputs = [stat, source] + ([pnr_report] if timed else [])
    got = {}
    t0 = time.perf_counter()
    failed, log = work / f"{stem}.failed", work / f"{stem}.log"
    if failed.is_file() and failed.read_text() == key:        # failed before on the same input: minutes saved
        return {"failed": f"Yosys failed, log {log}"}
    if not (all(f.is_file() for f in outputs) and keyfile.is_file() and keyfile.read_text() == key):
        for f in (stat, netlist, pnr_report, keyfile, failed):
            f.unlink(missing_ok=True)
        source.write_text(text)
        proc = subprocess.run([env["YOSYS"], "-q", "-l", log.name, "-p", script], cwd=work, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        if proc.returncode != 0 or not stat.is_file():
            netlist.unlink(missing_ok=True)
            failed.write_text(key)
            return {"failed": f"Yosys failed, log {log}"}
        got["synth_s"] = round(time.perf_counter() - t0, 1)
        if timed:
            t1 = time.perf_counter()
            proc = subprocess.run(pnr_cmd, cwd=work, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
            got["pnr_s"] = round(time.perf_counter() - t1, 1)
            if proc.returncode != 0 or not pnr_report.is_file():
                got["pnr_failed"] = f"nextpnr failed, log {work / f'{stem}.pnr.log'}"
        netlist.unlink(missing_ok=True)     # large, and not needed once placed
        if "pnr_failed" not in got:
            keyfile.write_text(key)
    got.setdefault("synth_s", round(time.perf_counter() - t0, 1))     # a cached block: about 0
    got["per_block"], _ = usage_from_stat(json.loads(stat.read_text()), board.cells)
    if timed and pnr_report.is_file():
        pnr = json.loads(pnr_report.read_text())
        fmax = pnr.get("fmax", {})
        got["fmax_mhz"] = round(min(v["achieved"] for v in fmax.values()), 2) if fmax else None
        got["critical_path"] = critical_path(pnr)
    return got


def render_breakdown(rows: list[dict], capacity: dict) -> str:
    """A Markdown table of :func:`block_breakdown`'s rows with a sum and the device's capacity."""
    res = [r for r in ("LUT", "FF", "BRAM", "DSP") if r in capacity]
    timed = any("fmax_mhz" in row or "pnr_failed" in row for row in rows)
    lines = ["| block | " + " | ".join(res) + (" | Fmax alone (MHz) | its critical path |" if timed else " |"),
             "|---|" + "---:|" * len(res) + ("---:|---|" if timed else "")]
    total = dict.fromkeys(res, 0)
    for row in sorted(rows, key=lambda r: -r["total"].get("LUT", 0)):
        cells = []
        for r in res:
            v = row["total"].get(r, 0)
            total[r] += v
            cells.append(str(v))
        if timed:
            cp = row.get("critical_path")
            cells += [str(row.get("fmax_mhz") or "-") if "pnr_failed" not in row else "nextpnr failed",
                      f"{cp['total_ns']} ns, {' -> '.join(cp['blocks']) or cp['start']}" if cp else "-"]
        name = row["block"] + (f" x{row['count']}" if row["count"] > 1 else "")
        if row.get("failed"):
            name += " (not synthesised: Yosys failed)"
        elif row.get("source"):
            name += " (from Verilog: Yosys failed on the RTLIL)"
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    tail = " | | |" if timed else " |"
    lines.append("| **sum of blocks** | " + " | ".join(f"**{total[r]}**" for r in res) + tail)
    lines.append("| device | " + " | ".join(str(capacity[r]) for r in res) + tail)
    return "\n".join(lines) + "\n"
