"""Run a bundle at a fidelity, check every output bit-exactly, and write ``report.json``.

Three fidelities, one interface (DESIGN.md): a backend takes a loaded
:class:`~npuforge.compiler.bundle.Bundle` and options and returns a
:class:`BackendResult` (the final DRAM image, cycles or None, counters, extra report
fields); :func:`run_bundle` does the rest the same way for all of them. The report
keys are a contract that scripts and studies parse: do not rename them.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from .compiler.bundle import Bundle, load_bundle

__all__ = ["BackendResult", "FidelityUnavailable", "ProgramStopped", "FIDELITIES", "REPORT_KEYS", "run_bundle", "summary_line",
           "compare_outputs"]

# Keys every report has, whatever the fidelity; later fidelities add energy_pj, power_mw and
# energy_breakdown_pj through BackendResult.extra (rtl with --power: from measured toggles;
# cycle: estimated from access counts, with energy_fidelity "cycle").
REPORT_KEYS = ("kernel", "config", "config_hash", "fidelity", "passed", "cycles", "macs", "utilization", "wall_s",
               "mismatch", "error", "counters")


@dataclass
class BackendResult:
    """What a fidelity backend returns."""
    dram: np.ndarray                # the final DRAM image (uint8)
    cycles: int | None              # None for the reference simulator
    counters: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)      # merged into the report


class FidelityUnavailable(NotImplementedError):
    """The fidelity exists in the interface but cannot run here (not built yet, or missing tools)."""


class ProgramStopped(Exception):
    """A backend's program stopped with an error (code, instruction index, line, message)."""

    def __init__(self, code: str, pc: int, line: int | None, message: str):
        super().__init__(f"{code} at instruction {pc}: {message}")
        self.code, self.pc, self.line, self.message = code, pc, line, message


def _source_lines(bundle: Bundle) -> list[int] | None:
    """Line of program.s for each instruction index, so that errors point into the source."""
    path = bundle.path / "program.s"
    if not path.is_file():
        return None
    try:
        from .assembler.asm import assemble
        assembled = assemble(path.read_text(), bundle.config, str(path))
    except Exception:       # the listing is only a convenience for messages; never fail a run on it
        return None
    if tuple(assembled.words) != tuple(bundle.image.words):
        return None
    return list(assembled.source_lines)


def _reference(bundle: Bundle, options: dict) -> BackendResult:
    from .isa import refsim
    kwargs = {k: options[k] for k in ("step_limit", "check_races") if k in options}
    try:
        r = refsim.run(bundle.image, bundle.dram, bundle.config, source_lines=_source_lines(bundle), **kwargs)
    except refsim.SimError as e:
        raise ProgramStopped(e.code.name, e.pc, e.line, e.message) from None
    counters = {"dispatched": r.dispatched, "array_macs": r.array_macs, "dram_read_bytes": r.dram_read_bytes,
                "dram_write_bytes": r.dram_write_bytes}
    return BackendResult(r.dram, None, counters)


def _rtl(bundle: Bundle, options: dict) -> BackendResult:
    try:
        from .cosim.runner import run_bundle_rtl
    except ImportError as e:
        raise FidelityUnavailable(f"fidelity 'rtl' needs npuforge.cosim.runner.run_bundle_rtl, which could not be "
                                  f"imported ({e}); is the RTL co-simulation installed?") from None
    return run_bundle_rtl(bundle, options)


def _cycle(bundle: Bundle, options: dict) -> BackendResult:
    from .compiler.cycle_model import run_bundle_cycle
    return run_bundle_cycle(bundle, options)


def _fpga(bundle: Bundle, options: dict) -> BackendResult:
    # A board (options: port, baud) or the simulated SoC (options: transport); see hw/soc/host.py.
    from .hw.soc.host import run_bundle_fpga
    return run_bundle_fpga(bundle, options)


FIDELITIES: dict[str, Callable[[Bundle, dict], BackendResult]] = {
    "reference": _reference,
    "rtl": _rtl,
    "cycle": _cycle,
    "fpga": _fpga,
}


def compare_outputs(bundle: Bundle, dram: np.ndarray) -> dict | None:
    """The first mismatching element over the output tensors (manifest order), or None.

    Returns
    -------
    dict or None
        ``{"tensor", "index" (list), "expected", "got"}``.
    """
    for name, t in bundle.tensors.items():
        if t.role != "output":
            continue
        got = bundle.read_tensor(dram, name)
        exp = bundle.expected[name]
        diff = np.argwhere(got != exp)
        if diff.size:
            idx = tuple(int(i) for i in diff[0])
            return {"tensor": name, "index": list(idx), "expected": int(exp[idx]), "got": int(got[idx])}
    return None


def run_bundle(bundle_dir: str | os.PathLike, fidelity: str = "reference", **options) -> dict:
    """Run a bundle, compare its outputs bit-exactly, write ``report.json`` in it and return the report.

    Parameters
    ----------
    bundle_dir : path
    fidelity : str
        A key of :data:`FIDELITIES`: ``reference``, ``rtl`` or ``cycle``.
    **options
        Passed to the backend (reference: ``step_limit``, ``check_races``; rtl: e.g. ``waves``).

    Returns
    -------
    dict
        The report: :data:`REPORT_KEYS` plus ``shape``, ``seed`` and what the backend adds.
        ``passed`` is False on a mismatch (``mismatch`` names the first one) or when the program
        stopped with an error (``error``: code, pc, line, message).

    Raises
    ------
    BundleError
        The bundle is missing parts or malformed.
    ValueError
        Unknown fidelity.
    FidelityUnavailable
        The fidelity cannot run here.
    """
    if fidelity not in FIDELITIES:
        raise ValueError(f"unknown fidelity '{fidelity}'; fidelities: {', '.join(FIDELITIES)}")
    bundle = load_bundle(bundle_dir)
    backend = FIDELITIES[fidelity]
    t0 = time.perf_counter()
    error = mismatch = result = None
    try:
        result = backend(bundle, dict(options))
    except ProgramStopped as e:
        error = {"code": e.code, "pc": e.pc, "line": e.line, "message": e.message}
    wall = time.perf_counter() - t0
    if result is not None:
        mismatch = compare_outputs(bundle, result.dram)
    cfg = bundle.config
    cycles = result.cycles if result is not None else None
    macs = int(bundle.manifest["macs"])
    report = {
        "kernel": bundle.kernel,
        "config": cfg.name,
        "config_hash": cfg.hash,
        "fidelity": fidelity,
        "passed": result is not None and mismatch is None,
        "cycles": cycles,
        "macs": macs,
        "utilization": macs / (cfg.pes * cycles) if cycles else None,
        "wall_s": round(wall, 6),
        "mismatch": mismatch,
        "error": error,
        "counters": dict(result.counters) if result is not None else {},
        "shape": bundle.manifest["shape"],
        "seed": bundle.manifest["seed"],
    }
    if result is not None:
        report.update(result.extra)
    tmp = bundle.path / ".report.json.tmp"
    tmp.write_text(json.dumps(report, indent=2, default=_json_default) + "\n")
    tmp.replace(bundle.path / "report.json")
    return report


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (Path, os.PathLike)):
        return str(value)
    raise TypeError(f"report value {value!r} is not JSON serialisable")


def _shape_text(kernel: str, shape: dict) -> str:
    s = shape
    if kernel == "matmul":
        return f"{s['m']}x{s['k']}x{s['n']}"
    if kernel in ("relu", "add"):
        return f"{s['m']}x{s['n']}"
    if kernel == "conv2d":
        return (f"{s['h']}x{s['w']}x{s['cin']}->{s['cout']} k{s['kh']}x{s['kw']} "
                f"s{s['stride']} p{s['pad']}")
    if kernel == "maxpool":
        return f"{s['h']}x{s['w']}x{s['cin']} k{s['kh']}x{s['kw']} s{s['stride']}"
    return " ".join(f"{k}={v}" for k, v in s.items())


def summary_line(report: dict) -> str:
    """One line for a human: ``PASS matmul 64x64x64 on 8x8 [reference] macs=262144 wall=0.05s``."""
    status = "PASS" if report["passed"] else "FAIL"
    parts = [status, report["kernel"]]
    if report.get("shape"):
        parts.append(_shape_text(report["kernel"], report["shape"]))
    parts += ["on", report["config"], f"[{report['fidelity']}]"]
    if report.get("cycles") is not None:
        parts.append(f"cycles={report['cycles']}")
        if report.get("utilization") is not None:
            parts.append(f"util={report['utilization']:.1%}")
    parts.append(f"macs={report['macs']}")
    wall = report["wall_s"]
    parts.append(f"wall={wall:.2f}s")
    if report.get("cycles_per_s"):
        # The simulator's own rate (start to done), without process start-up and loading.
        parts.append(f"sim={report['cycles_per_s'] / 1e6:.2f} Mcycles/s")
    elif report.get("cycles") and wall > 0:
        parts.append(f"{report['cycles'] / wall / 1e6:.2f} Mcycles/s")
    if report.get("energy_pj") is not None:
        # The cycle model's energy is an estimate from access counts, not measured toggles: say so.
        estimated = report.get("energy_fidelity") == "cycle"
        parts.append(f"energy{'~' if estimated else '='}{report['energy_pj']:.4g}pJ" + (" (est.)" if estimated else ""))
    if report.get("error"):
        e = report["error"]
        parts.append(f"error={e['code']}@{e['pc']}")
    elif report.get("mismatch"):
        m = report["mismatch"]
        parts.append(f"mismatch={m['tensor']}{m['index']}")
    return " ".join(parts)
