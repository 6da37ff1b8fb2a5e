"""Run the host driver against the simulated SoC: :func:`run_soc_sim` and :func:`run_bundle_soc_sim`.

The whole path of a board run is exercised: the host driver's frames, the UART bits on
the SoC's ``rx``/``tx`` pins, the protocol engine, the on-chip DRAM, the FPGA memory
implementation and the core. Only the clock rate and the baud rate are the simulation's
(:mod:`npuforge.cosim.soc_build`).
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

from .build import repo_build_dir
from .soc_build import PERIOD_NS, SIM_BAUD, SIM_CLOCK_HZ, build_soc_sim, get_runner

__all__ = ["run_soc_sim", "run_bundle_soc_sim", "SocSimError", "DEFAULT_SIM_DRAM_BYTES", "call_run_bundle"]

DEFAULT_SIM_DRAM_BYTES = 16384


class SocSimError(RuntimeError):
    """The simulation itself failed (build, crash, missing results), not a call in it."""


def run_soc_sim(config, calls: list[dict], *, dram_bytes: int = DEFAULT_SIM_DRAM_BYTES,
                quiet: bool = False) -> list[dict]:
    """Run host-driver calls, in order, against one simulated SoC (state carries over).

    Parameters
    ----------
    config : HwConfig
    calls : list of dict
        ``{"func": "package.module:function", "kwargs": {...}}``; each function is called as
        ``function(transport, **kwargs)`` and must return something JSON-able.
    dram_bytes : int
        On-chip DRAM of the simulated SoC.
    quiet : bool

    Returns
    -------
    list of dict
        Per call: ``{"ok": True, "value": ...}`` or ``{"ok": False, "error_type", "message", "traceback"}``.

    Raises
    ------
    SocSimError
    """
    try:
        build = build_soc_sim(config, dram_bytes=dram_bytes, quiet=quiet)
    except RuntimeError as e:
        raise SocSimError(str(e)) from None
    runs = repo_build_dir() / "soc" / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    run_dir = Path(tempfile.mkdtemp(prefix=f"{config.name}-", dir=runs))
    manifest = {"calls": calls, "clock_hz": SIM_CLOCK_HZ, "divisor": SIM_CLOCK_HZ // SIM_BAUD,
                "period_ns": PERIOD_NS}
    (run_dir / "jobs.json").write_text(json.dumps(manifest))
    log = run_dir / "sim.log"
    if not quiet:
        print(f"[npuforge soc] running {len(calls)} host call(s) on the simulated {config.name} SoC...",
              file=sys.stderr, flush=True)
    try:
        get_runner().test(test_module="npuforge.cosim.soc_bench", hdl_toplevel=build.toplevel,
                          hdl_toplevel_lang="verilog", build_dir=build.directory, test_dir=run_dir, log_file=log,
                          plusargs=[f"+NPUFORGE_SOC_JOBS={run_dir / 'jobs.json'}"],
                          extra_env={"COCOTB_LOG_LEVEL": "WARNING"})
    except (RuntimeError, SystemExit) as e:
        raise SocSimError(f"SoC simulation failed ({e}); log: {log}\n{_tail(log)}") from None
    res = run_dir / "results.json"
    if not res.is_file():
        raise SocSimError(f"SoC simulation wrote no results; log: {log}\n{_tail(log)}")
    results = json.loads(res.read_text())
    if len(results) != len(calls):
        raise SocSimError(f"SoC simulation finished {len(results)} of {len(calls)} calls; log: {log}")
    shutil.rmtree(run_dir, ignore_errors=True)
    return results


def _tail(path: Path, n: int = 4000) -> str:
    return path.read_text(errors="replace")[-n:] if path.is_file() else ""


def call_run_bundle(transport, bundle_dir: str, **options) -> dict:
    """A call for :func:`run_soc_sim`: ``run_bundle(bundle_dir, "fpga")`` through ``transport``.

    Writes ``report.json`` (fidelity ``fpga``) into the bundle, as a board run does; returns the report.
    """
    from ..run import run_bundle
    options.setdefault("poll_s", 0.0005)
    return run_bundle(bundle_dir, "fpga", transport=transport, **options)


def run_bundle_soc_sim(bundle_dir, *, dram_bytes: int = DEFAULT_SIM_DRAM_BYTES, quiet: bool = False,
                       **options) -> dict:
    """Run a bundle through the host driver on the simulated SoC of its config.

    Returns
    -------
    dict
        The ``fpga`` report (also in ``bundle_dir/report.json``).

    Raises
    ------
    SocSimError
        The simulation failed, or the driver raised (the message carries its type and message).
    """
    from ..compiler.bundle import load_bundle
    bundle = load_bundle(bundle_dir)
    [r] = run_soc_sim(bundle.config, [{"func": "npuforge.cosim.soc_sim:call_run_bundle",
                                      "kwargs": {"bundle_dir": str(Path(bundle_dir).resolve()), **options}}],
                      dram_bytes=dram_bytes, quiet=quiet)
    if not r["ok"]:
        raise SocSimError(f"{r['error_type']}: {r['message']}")
    return r["value"]
