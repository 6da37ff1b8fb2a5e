"""The Verilator build of the simulation top with activity probes (``-power`` build folders).

Same Verilog as :func:`npuforge.cosim.build.build_rtl`; only the test bench differs: it
holds the counters of :mod:`npuforge.cosim.toggles`. The probe list is stored in the
build folder (``probes.json``) so that a run can name its SRAM counters.
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import time
from pathlib import Path

from . import build as _b
from .toggles import Probe, SramPort, find_probes, probe_verilog

__all__ = ["build_power_rtl", "load_probes", "wrap_long_lines"]

_HERE = Path(__file__).resolve().parent


def _key(config) -> str:
    h = hashlib.sha256(_b._source_key(config).encode())
    h.update((_HERE / "toggles.py").read_bytes())
    h.update((_HERE / "power_build.py").read_bytes())
    return h.hexdigest()[:16]


def wrap_long_lines(verilog: str, limit: int = 2000) -> str:
    """Break ``wire`` lines longer than ``limit`` characters after each ``", "``.

    Verilator's preprocessor stops at 40,000 tokens on one line ("Too many preprocessor
    tokens"); the probes' concatenations of every PE register reach that on 16x16. An
    escaped identifier holds no space and a ``wire`` line no string, so there ``", "`` only
    ever separates list items.
    """
    return "\n".join(line.replace(", ", ",\n      ") if len(line) > limit and line.startswith("  wire ") else line
                     for line in verilog.split("\n"))


def build_power_rtl(config, *, waves: bool = False, quiet: bool = False) -> _b.RtlBuild:
    """Build (or reuse) the simulation top with activity counters for ``config``.

    Parameters
    ----------
    config : HwConfig
    waves : bool
        Also trace (for the VCD cross-check).
    quiet : bool
        No progress lines.

    Returns
    -------
    RtlBuild

    Raises
    ------
    RuntimeError
        The Verilator or C++ build failed (the message names the log).
    """
    t0 = time.perf_counter()
    root = _b.repo_build_dir() / "rtl"
    suffix = "-power" + ("-waves" if waves else "")
    index = root / "index" / f"{_key(config)}{suffix}.json"
    if index.is_file():
        directory = Path(json.loads(index.read_text())["directory"])
        if (directory / "build.json").is_file() and (directory / "probes.json").is_file():
            return _b.RtlBuild(config.hash, directory, waves, False, time.perf_counter() - t0)
    if not quiet:
        _b._progress(f"generating Verilog for {config.name} with activity probes...")
    from .simtop import TOP_NAME
    text, mems, tb = _b.simtop_verilog(config)
    probes, ports = find_probes(text, TOP_NAME)
    end = tb.rindex("endmodule")
    tb = tb[:end] + wrap_long_lines(probe_verilog(probes, ports)) + tb[end:]
    simmem = (_HERE / "simmem.v").read_text()
    flags = " ".join(_build_args()) + " " + _b._MAKEFLAGS
    vsha = hashlib.sha256((text + tb + simmem + flags).encode()).hexdigest()[:12]
    directory = root / f"{config.hash}-{vsha}{suffix}"
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        built_now = _build_locked(config, directory, text, tb, simmem, vsha, mems, waves, quiet, t0)
        (directory / "probes.json").write_text(json.dumps({
            "probes": [dataclasses.asdict(p) for p in probes],
            "ports": [dataclasses.asdict(p) for p in ports]}))
    index.parent.mkdir(parents=True, exist_ok=True)
    index.write_text(json.dumps({"directory": str(directory)}))
    if built_now:
        _b._prune(root, config.hash, suffix, keep=directory)
    dt = time.perf_counter() - t0
    if built_now and not quiet:
        _b._progress(f"built {config.name} RTL with activity probes in {dt:.1f} s")
    return _b.RtlBuild(config.hash, directory, waves, built_now, dt)


def _build_args() -> list[str]:
    """The plain build's flags, plus the popcnt instruction where the CPU has it: without it gcc
    calls a library routine for every ``$countones`` word (about 2x slower, RECIPES.md sec. 7)."""
    args = list(_b._BUILD_ARGS)
    try:
        has_popcnt = " popcnt" in Path("/proc/cpuinfo").read_text()
    except OSError:
        has_popcnt = False
    return args + (["-CFLAGS", "-mpopcnt"] if has_popcnt else [])


def _build_locked(config, directory, text, tb, simmem, vsha, mems, waves, quiet, t0) -> bool:
    """As :func:`npuforge.cosim.build._build_locked`, but a traced build always writes VCD: the
    cross-check reads it with :mod:`npuforge.cosim.vcd_activity`."""
    if (directory / "build.json").is_file():
        return False
    src = directory / "src"
    src.mkdir(parents=True, exist_ok=True)
    (src / "simtop.v").write_text(text)
    (src / "tb.v").write_text(tb)
    (src / "simmem.v").write_text(simmem)
    if not quiet:
        _b._progress(f"building {config.name} RTL with probes into {directory} (first time, ~1-3 min)...")
    log = directory / "build.log"
    try:
        _b.get_runner().build(sources=[src / "simmem.v", src / "simtop.v", src / "tb.v"], hdl_toplevel=_b.TB_NAME,
                              build_dir=directory, build_args=_build_args(), waves=waves,
                              timescale=("1ns", "1ps"), log_file=log)
    except (RuntimeError, SystemExit) as e:
        tail = log.read_text()[-3000:] if log.is_file() else ""
        raise RuntimeError(f"Verilator build of {config.name} with probes failed ({e}); log: {log}\n{tail}") from None
    _b._tidy(directory)
    (directory / "build.json").write_text(json.dumps({
        "config": config.to_dict(), "config_hash": config.hash, "verilog_sha": vsha, "waves": waves,
        "trace": "vcd" if waves else None, "memories_cleared": mems,
        "build_s": round(time.perf_counter() - t0, 2)}, indent=1))
    return True


def load_probes(directory) -> tuple[list[Probe], list[SramPort]]:
    """The probes and SRAM ports stored by :func:`build_power_rtl` in ``directory``."""
    raw = json.loads((Path(directory) / "probes.json").read_text())
    return [Probe(**p) for p in raw["probes"]], [SramPort(**p) for p in raw["ports"]]
