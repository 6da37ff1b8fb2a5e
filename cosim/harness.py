"""Run programs on the plain Verilator C++ harness: ``run_rtl(..., engine="harness")``.

Same jobs, same files and the same :class:`~npuforge.cosim.runner.RtlResult` objects as the
cocotb flow (:mod:`npuforge.cosim.runner`), from a model of the same Verilog driven by
``cosim/harness/main.cpp`` (:mod:`npuforge.cosim.harness_build`) instead of cocotb: the
simulator is one C++ process with no Python or VPI in it, the bulk engine for long runs.
The peak resident memory of that process (its own ``VmHWM``) is in ``extra["max_rss_bytes"]``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ..isa.spec import ErrorCode
from .build import repo_build_dir
from .harness_build import HARNESS_BIN, build_harness
from .hexio import read_beats_hex

__all__ = ["run_harness", "counter_fields"]


def counter_fields() -> list[tuple[str, int, int]]:
    """``(name, bit offset, width)`` of every field of the core's counters port."""
    from amaranth.hdl import Shape
    from amaranth.lib import data

    from ..hw.counters import Counters
    return [(name, f.offset, Shape.cast(f.shape).width) for name, f in data.Layout.cast(Counters)]


def run_harness(jobs, config, *, max_cycles: int, quiet: bool = False, power: bool = False) -> list:
    """Run jobs on the C++ harness of ``config``; see :func:`npuforge.cosim.runner.run_rtl`.

    Parameters
    ----------
    jobs : list of (program, dram_image)
    config : HwConfig
    max_cycles : int
        Watchdog per job.
    quiet : bool
        No progress lines.
    power : bool
        Count switching activity (``extra["activity"]``, the same counts as the cocotb flow's).

    Returns
    -------
    list of RtlResult

    Raises
    ------
    RtlError
        The build failed, the harness exited with an error or wrote incomplete results.
    """
    from .runner import RtlError, RtlResult, _attach_activity, _write_jobs
    try:
        build = build_harness(config, power=power, quiet=quiet)
    except RuntimeError as e:
        raise RtlError(str(e)) from None
    t_setup = time.perf_counter()
    runs = repo_build_dir() / "harness" / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    run_dir = Path(tempfile.mkdtemp(prefix=f"{config.name}-", dir=runs))
    drams, manifest = _write_jobs(run_dir, jobs, config, build.imem_cleared, max_cycles)
    lines = [f"{manifest['beat_bytes']} {manifest['setup_cycles']} {len(manifest['jobs'])}"]
    lines += [f"{j['max_cycles']} {j['copy_words']}" for j in manifest["jobs"]]
    (run_dir / "jobs.txt").write_text("\n".join(lines) + "\n")
    setup_s = time.perf_counter() - t_setup

    if not quiet:
        print(f"[npuforge rtl] running {len(drams)} job(s) on the {config.name} harness...", file=sys.stderr,
              flush=True)
    log = run_dir / "sim.log"
    t0 = time.perf_counter()
    with open(log, "w") as f:
        proc = subprocess.run([str(build.directory / HARNESS_BIN), "jobs.txt"], cwd=run_dir, stdout=f,
                              stderr=subprocess.STDOUT)
    total_wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RtlError(f"the harness exited with {proc.returncode}; log: {log}\n{_tail(log)}")
    res_file = run_dir / "results.json"
    raw = json.loads(res_file.read_text()) if res_file.is_file() else []
    if len(raw) != len(drams):
        raise RtlError(f"the harness finished {len(raw)} of {len(drams)} jobs; log: {log}\n{_tail(log)}")

    fields = counter_fields()
    beat = config.dram_bytes_per_cycle
    results = []
    for i, (r, dram) in enumerate(zip(raw, drams)):
        bits = int(r["counters_hex"], 16)
        counters = {name: (bits >> off) & ((1 << width) - 1) for name, off, width in fields}
        written = None
        if r["wr_range"] is not None:
            lo, hi = r["wr_range"]
            start, beats = read_beats_hex(run_dir / f"job{i}.out.hex", beat, start=lo)
            if start != lo or len(beats) != hi - lo + 1:
                raise RtlError(f"job {i}: dump holds beats {start}+{len(beats)}, expected {lo}..{hi}")
            written = (lo, beats)
        run_s = r["run_s"]
        results.append(RtlResult(
            initial=dram, written=written, dram_bytes=config.dram_bytes, cycles=counters["cycles"],
            counters=counters, error=ErrorCode(r["error"]), error_pc=int(r["error_pc"]),
            sim_wall_s=r["sim_wall_s"], cycles_per_s=counters["cycles"] / run_s if run_s > 0 else 0.0,
            timed_out=bool(r["timed_out"]),
            extra={"engine": "harness", "build_dir": str(build.directory), "total_wall_s": total_wall,
                   "job_wall_s": r["job_wall_s"], "run_s": run_s, "setup_s": setup_s,
                   "max_rss_bytes": int(r["peak_rss_kib"]) * 1024}))
    if power:
        _attach_activity(results, build.directory, run_dir)
    shutil.rmtree(run_dir, ignore_errors=True)
    return results


def _tail(path: Path, n: int = 4000) -> str:
    return path.read_text(errors="replace")[-n:] if path.is_file() else ""
