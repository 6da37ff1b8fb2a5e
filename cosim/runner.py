"""Run programs on the RTL: ``run_rtl`` (many jobs in one simulator process) and the ``rtl`` fidelity.

A job is a program (instruction words or a :class:`~npuforge.isa.image.ProgramImage`) and
an initial DRAM image. :func:`run_rtl` builds (or reuses) the Verilator model for the
config, writes every job's program and DRAM files into a fresh run folder, starts one cocotb
simulation that runs them in a row (:mod:`npuforge.cosim.bench`), and returns one
:class:`RtlResult` per job with the final DRAM, the cycle count, the counters and the
error register.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..isa.image import ProgramImage
from ..isa.spec import ErrorCode
from .build import build_rtl, get_runner, repo_build_dir
from .hexio import write_beats_bin, write_words_bin

__all__ = ["RtlResult", "RtlError", "run_rtl", "run_bundle_rtl", "DEFAULT_MAX_CYCLES", "ENGINES"]

DEFAULT_MAX_CYCLES = 50_000_000


class RtlError(RuntimeError):
    """The co-simulation itself failed (build, simulator crash, watchdog), not the program."""


@dataclass
class RtlResult:
    """The outcome of one job on the RTL.

    ``dram`` (the final image, uint8, ``dram_bytes`` long) is built on first use from the
    initial image and the beats the run wrote, so that a batch of results stays small.
    """
    initial: np.ndarray = field(repr=False)      # initial DRAM image (trimmed)
    written: tuple = field(repr=False)           # (first beat, (n, B) beats) or None
    dram_bytes: int
    cycles: int                      # core cycles from start to done (counters["cycles"])
    counters: dict
    error: ErrorCode
    error_pc: int
    sim_wall_s: float                # wall time of the job in the simulator (load, run, dump)
    cycles_per_s: float              # cycles / wall time from go to finished
    timed_out: bool = False
    extra: dict = field(default_factory=dict)

    @property
    def dram(self) -> np.ndarray:
        out = np.zeros(self.dram_bytes, dtype=np.uint8)
        out[:self.initial.size] = self.initial
        if self.written is not None:
            lo, beats = self.written
            b = beats.shape[1]
            out[lo * b:lo * b + beats.size] = beats.reshape(-1)
        return out


def _as_words(program) -> list[int]:
    if isinstance(program, ProgramImage):
        return list(program.words)
    return [int(w) for w in program]


def _as_dram(image, config) -> np.ndarray:
    """The image as uint8, padded to whole beats (not to the whole DRAM)."""
    if image is None:
        return np.zeros(0, dtype=np.uint8)
    image = np.asarray(image, dtype=np.uint8).reshape(-1)
    if image.size > config.dram_bytes:
        raise ValueError(f"DRAM image of {image.size} bytes is larger than the config's DRAM "
                         f"({config.dram_bytes} bytes, dram_mib={config.dram_mib})")
    pad = -image.size % config.dram_bytes_per_cycle
    return np.concatenate([image, np.zeros(pad, np.uint8)]) if pad else image


def _write_jobs(run_dir: Path, jobs, config, imem_cleared: bool, max_cycles: int) -> tuple[list, dict]:
    """Write every job's program and DRAM files into ``run_dir``; (DRAM images, manifest)."""
    b = config.dram_bytes_per_cycle
    drams, manifest_jobs = [], []
    for i, (program, image) in enumerate(jobs):
        words = _as_words(program)
        if len(words) > config.imem_words:
            raise ValueError(f"job {i}: {len(words)} instructions do not fit the instruction memory "
                             f"({config.imem_words} words, imem_words)")
        dram = _as_dram(image, config)
        write_words_bin(run_dir / f"job{i}.prog.bin", words)
        write_beats_bin(run_dir / f"job{i}.dram.bin", dram, b)
        drams.append(dram)
        manifest_jobs.append({"max_cycles": int(max_cycles), "words": len(words),
                              "copy_words": len(words) if imem_cleared else config.imem_words})
    return drams, {"beat_bytes": b, "setup_cycles": config.imem_words + 8, "jobs": manifest_jobs}


def _attach_activity(results: list[RtlResult], build_dir: Path, run_dir: Path) -> None:
    """Put each job's line of the activity file into ``extra["activity"]``."""
    from .power_build import load_probes
    from .toggles import ACTIVITY_FILE, parse_activity_line
    probes, ports = load_probes(build_dir)
    lines = (run_dir / ACTIVITY_FILE).read_text().splitlines() if (run_dir / ACTIVITY_FILE).is_file() else []
    if len(lines) != len(results):
        raise RtlError(f"activity counters for {len(lines)} of {len(results)} jobs in {run_dir / ACTIVITY_FILE}")
    for r, line in zip(results, lines):
        r.extra["activity"] = parse_activity_line(json.loads(line), ports, probes)


ENGINES = ("cocotb", "harness")


def run_rtl(jobs, config, *, waves: bool = False, wave_path=None, max_cycles: int = DEFAULT_MAX_CYCLES,
            quiet: bool = False, power: bool = False, engine: str = "cocotb") -> list[RtlResult]:
    """Run one or more programs on the RTL of ``config``, each from a fresh machine state.

    Parameters
    ----------
    jobs : (program, dram_image) or a list of them
        ``program``: instruction words or a ProgramImage; ``dram_image``: uint8 array (zero
        padded to ``dram_bytes``) or None.
    config : HwConfig
    waves : bool
        Record a waveform of the whole run: FST (see :func:`~npuforge.cosim.build.prepare_fst`), else VCD.
    wave_path : path, optional
        Where to move the waveform (default: left in the run folder, path in ``extra["waves"]``).
    max_cycles : int
        Watchdog per job: a run longer than this stops with ``timed_out``.
    quiet : bool
        No progress lines on stderr.
    power : bool
        Count switching activity (:mod:`npuforge.cosim.toggles`, its own build folder):
        each result's ``extra["activity"]`` holds it.
    engine : str
        ``"cocotb"`` (cocotb + Verilator, the default; waves) or ``"harness"`` (a plain
        Verilator C++ harness of the same Verilog, :mod:`npuforge.cosim.harness`: several
        times faster, no waves; ``extra["max_rss_bytes"]`` gives the simulator's peak memory).

    Returns
    -------
    list of RtlResult
        In job order. ``error`` is the core's error register (``ErrorCode.NONE`` on a normal run).

    Raises
    ------
    RtlError
        The build or the simulation failed (the message names the log).
    ValueError
        A program longer than the instruction memory or a DRAM image larger than the DRAM,
        an unknown ``engine``, or waves asked of the harness.
    """
    if isinstance(jobs, tuple) and len(jobs) == 2 and not isinstance(jobs[0], tuple):
        jobs = [jobs]
    jobs = list(jobs)
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}, not {engine!r}")
    if engine == "harness":
        if waves:
            raise ValueError("waves need engine='cocotb'; the harness writes none")
        from .harness import run_harness
        return run_harness(jobs, config, max_cycles=max_cycles, quiet=quiet, power=power)
    try:
        if power:
            from .power_build import build_power_rtl
            build = build_power_rtl(config, waves=waves, quiet=quiet)
        else:
            build = build_rtl(config, waves=waves, quiet=quiet)
    except RuntimeError as e:
        raise RtlError(str(e)) from None
    t_setup = time.perf_counter()
    runs = repo_build_dir() / "rtl" / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    run_dir = Path(tempfile.mkdtemp(prefix=f"{config.name}-", dir=runs))
    drams, manifest = _write_jobs(run_dir, jobs, config, build.imem_cleared, max_cycles)
    (run_dir / "jobs.json").write_text(json.dumps(manifest))
    setup_s = time.perf_counter() - t_setup

    if not quiet:
        print(f"[npuforge rtl] running {len(jobs)} job(s) on {config.name} RTL...", file=sys.stderr, flush=True)
    runner = get_runner()
    log = run_dir / "sim.log"
    t0 = time.perf_counter()
    failure = []

    def simulate():
        try:
            runner.test(test_module="npuforge.cosim.bench", hdl_toplevel=build.toplevel,
                        hdl_toplevel_lang="verilog", build_dir=build.directory, test_dir=run_dir, waves=waves,
                        log_file=log, plusargs=[f"+NPUFORGE_JOBS={run_dir / 'jobs.json'}"],
                        extra_env={"COCOTB_LOG_LEVEL": "WARNING"})
        except BaseException as e:         # reported by the caller's thread
            failure.append(e)

    # The simulation runs in a thread so that this one can show the bench's progress file.
    thread = threading.Thread(target=simulate, daemon=True)
    thread.start()
    shown = ""
    while thread.is_alive():
        thread.join(1.0)
        text = (run_dir / "progress.txt").read_text() if (run_dir / "progress.txt").is_file() else ""
        if text and text != shown and not quiet:
            print(f"[npuforge rtl] {config.name}: {text}", file=sys.stderr, flush=True)
            shown = text
    if failure:
        raise RtlError(f"simulation failed ({failure[0]}); log: {log}\n{_tail(log)}") from None
    total_wall = time.perf_counter() - t0
    res_file = run_dir / "results.json"
    if not res_file.is_file():
        raise RtlError(f"simulation wrote no results; log: {log}\n{_tail(log)}")
    raw = json.loads(res_file.read_text())
    if len(raw) != len(jobs):
        raise RtlError(f"simulation finished {len(raw)} of {len(jobs)} jobs; log: {log}\n{_tail(log)}")

    results = []
    for i, (r, dram) in enumerate(zip(raw, drams)):
        written = None
        if r["wr_range"] is not None:
            written = (r["wr_range"][0], np.load(run_dir / f"job{i}.out.npy"))
        wall = r["sim_wall_s"]
        run_s = r["run_s"]
        results.append(RtlResult(
            initial=dram, written=written, dram_bytes=config.dram_bytes, cycles=int(r["cycles"]),
            counters=r["counters"], error=ErrorCode[r["error"]],
            error_pc=int(r["error_pc"]), sim_wall_s=wall, cycles_per_s=r["cycles"] / run_s if run_s > 0 else 0.0,
            timed_out=r["timed_out"], extra={"engine": "cocotb", "run_dir": str(run_dir),
                                             "build_dir": str(build.directory), "total_wall_s": total_wall,
                                             "job_wall_s": r["job_wall_s"], "run_s": run_s, "setup_s": setup_s}))
    if power:
        _attach_activity(results, build.directory, run_dir)
    if waves:
        found = sorted(run_dir.glob("dump.*"))
        if found:
            wave = found[0]
            if wave_path is not None:
                wave_path = Path(wave_path)
                wave_path = wave_path.with_suffix(wave.suffix)
                shutil.move(str(wave), wave_path)
                wave = wave_path
            for r in results:
                r.extra["waves"] = str(wave)
    else:
        shutil.rmtree(run_dir, ignore_errors=True)
        for r in results:
            r.extra.pop("run_dir")
    return results


def _tail(path: Path, n: int = 4000) -> str:
    return path.read_text(errors="replace")[-n:] if path.is_file() else ""


def run_bundle_rtl(bundle, options: dict):
    """The ``rtl`` fidelity for :func:`npuforge.run.run_bundle`.

    Parameters
    ----------
    bundle : Bundle
    options : dict
        ``waves`` (bool): write ``waves.vcd`` (or ``.fst``) into the bundle folder;
        ``max_cycles`` (int): watchdog;
        ``power`` (bool, default True): count switching activity and report energy
        (:func:`npuforge.cosim.energy.energy_report`), so that every RTL report carries
        energy and power; False for the plain build (timing only, 1.3-2x faster);
        ``engine`` (str): ``"cocotb"`` (default) or ``"harness"`` (see :func:`run_rtl`).

    Returns
    -------
    BackendResult
        ``extra`` holds ``sim_wall_s``, ``cycles_per_s``, ``build_s`` and ``waves`` when asked;
        with ``power`` (the default), ``energy_pj``, ``power_mw``, ``energy_breakdown_pj`` and ``activity``.

    Raises
    ------
    ProgramStopped
        The core stopped with an error (code and instruction index).
    RtlError
        The co-simulation failed or the watchdog fired.
    """
    from ..run import BackendResult, ProgramStopped
    config = bundle.config
    bundle.image.check_config(config, str(bundle.path / "program.bin"))
    waves = bool(options.get("waves", False))
    power = bool(options.get("power", True))
    engine = options.get("engine", "cocotb")
    t0 = time.perf_counter()
    if engine == "harness":
        from .harness_build import build_harness
        build = build_harness(config, power=power)
    elif power:
        from .power_build import build_power_rtl
        build = build_power_rtl(config, waves=waves)
    else:
        build = build_rtl(config, waves=waves)
    build_s = time.perf_counter() - t0
    [r] = run_rtl([(bundle.image, bundle.dram)], config, waves=waves,
                  wave_path=bundle.path / "waves" if waves else None,
                  max_cycles=int(options.get("max_cycles", DEFAULT_MAX_CYCLES)), power=power, engine=engine)
    if r.timed_out:
        raise RtlError(f"the RTL run did not finish within {options.get('max_cycles', DEFAULT_MAX_CYCLES)} cycles")
    if r.error != ErrorCode.NONE:
        raise ProgramStopped(r.error.name, r.error_pc, None, f"the RTL stopped with {r.error.name}")
    extra = {"sim_wall_s": round(r.sim_wall_s, 6), "cycles_per_s": round(r.cycles_per_s),
             "build_s": round(build_s, 3), "rtl_build": str(build.directory)}
    if "waves" in r.extra:
        extra["waves"] = r.extra["waves"]
    if power:
        from .energy import energy_report
        extra.update(energy_report(r.extra["activity"], r.counters, config))
    return BackendResult(r.dram, r.cycles, r.counters, extra)
