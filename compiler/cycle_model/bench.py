"""Side-by-side speed of the cycle model and the RTL co-simulation on one matmul bundle.

``python -m npuforge.compiler.cycle_model.bench [--config 8x8] [--m 256 --k 256 --n 256]``
(``make bench-cycle``) builds the bundle (under ``build/bench``), runs it at ``rtl`` and
``cycle`` fidelity in this one process, checks that both pass with the same cycles and
counters, and prints:

- the RTL figures (after one untimed run, so the Verilator build is cached as in any later
  run): the whole ``run_bundle`` call (build check, process start, loading, simulation)
  and the simulation alone (``sim_wall_s``);
- the model figures, best of ``--repeat`` runs: the whole ``cycle`` fidelity call (timing
  *and* results: every command executed with the reference simulator's code), and timing
  alone (cycles, counters and activity, what a search loop needs) on the native engine and
  on the Python model;
- the ratios, and whether the issue's target (the timing model at least 100x faster than
  the RTL cosim, aim 1,000x) is met: timing alone against both RTL figures.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

__all__ = ["benchmark", "main"]


def benchmark(config_name: str = "8x8", m: int = 256, k: int = 256, n: int = 256, repeat: int = 5,
              out_dir: str | Path | None = None, rtl: bool = True) -> dict:
    """Run the matmul at both fidelities and time them.

    Parameters
    ----------
    config_name : str
        Preset or YAML path.
    m, k, n : int
        Matmul shape.
    repeat : int
        Runs of each model figure; the best is reported.
    out_dir : path, optional
        Bundle folder (default ``build/bench/matmul-<config>-<m>x<k>x<n>``).
    rtl : bool
        Also run the RTL (False: the model's figures only).

    Returns
    -------
    dict
        ``cycles``, ``instructions``, ``rtl_wall_s``, ``rtl_sim_wall_s``, ``model_wall_s`` (the
        cycle fidelity call), ``native_timing_s`` and ``python_timing_s`` (timing alone; the
        native one is None where no C++ compiler is found), the ``speedup_*`` ratios and
        ``counters_equal``.

    Raises
    ------
    RuntimeError
        When a fidelity fails the run or the two disagree on cycles or counters.
    """
    from ...config import load_config
    from ...run import run_bundle
    from ..bundle import load_bundle, make_bundle
    from . import native, simulate

    cfg = load_config(config_name)
    if out_dir is None:
        from ...cosim.build import repo_build_dir
        out_dir = repo_build_dir() / "bench" / f"matmul-{cfg.name}-{m}x{k}x{n}"
    path = make_bundle("matmul", {"m": m, "k": k, "n": n}, cfg, 0, out_dir)
    bundle = load_bundle(path)
    out = {"config": cfg.name, "shape": f"{m}x{k}x{n}"}

    def best_of(fn):
        best, result = float("inf"), None
        for _ in range(max(1, repeat)):
            t0 = time.perf_counter()
            result = fn()
            best = min(best, time.perf_counter() - t0)
        return best, result

    model_wall, model = best_of(lambda: run_bundle(path, "cycle"))
    if not model["passed"]:
        raise RuntimeError(f"cycle fidelity failed: {model['error'] or model['mismatch']}")
    timings = {}
    for engine in ("native", "python"):
        if engine == "native" and not native.available():
            timings[engine] = None
            continue
        timings[engine], r = best_of(lambda: simulate(bundle.image, cfg, engine=engine))
        if (r.cycles, r.counters) != (model["cycles"], model["counters"]):
            raise RuntimeError(f"the {engine} engine disagrees with the cycle fidelity report")
    out.update(cycles=model["cycles"], instructions=model["counters"]["instructions"], model_wall_s=model_wall,
               native_timing_s=timings["native"], python_timing_s=timings["python"])
    if rtl:
        # Timing against timing: the plain RTL build, no toggle counting.
        run_bundle(path, "rtl", power=False)    # untimed: builds the Verilator model if it is not cached yet
        t0 = time.perf_counter()
        ref = run_bundle(path, "rtl", power=False)
        rtl_wall = time.perf_counter() - t0
        if not ref["passed"]:
            raise RuntimeError(f"rtl fidelity failed: {ref['error'] or ref['mismatch']}")
        if ref["cycles"] != model["cycles"] or ref["counters"] != model["counters"]:
            raise RuntimeError(f"the model disagrees with the RTL: cycles {model['cycles']} vs {ref['cycles']}, "
                               f"counters {model['counters']} vs {ref['counters']}")
        fastest = timings["native"] or timings["python"]
        out.update(rtl_wall_s=rtl_wall, rtl_sim_wall_s=ref.get("sim_wall_s"), counters_equal=True,
                   speedup_run=rtl_wall / model_wall,
                   speedup_timing_vs_run=rtl_wall / fastest,
                   speedup_timing_vs_sim=ref["sim_wall_s"] / fastest,
                   speedup_python_vs_run=rtl_wall / timings["python"])
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m npuforge.compiler.cycle_model.bench", description=__doc__.split("\n")[0])
    ap.add_argument("--config", default="8x8")
    ap.add_argument("--m", type=int, default=256)
    ap.add_argument("--k", type=int, default=256)
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--no-rtl", action="store_true", help="time the model only")
    args = ap.parse_args(argv)
    r = benchmark(args.config, args.m, args.k, args.n, args.repeat, rtl=not args.no_rtl)
    print(f"matmul {r['shape']} on {r['config']}: {r['cycles']} cycles, {r['instructions']} instructions "
          f"(times: best of {args.repeat} for the model)")
    if "rtl_wall_s" in r:
        print(f"  rtl   run_bundle              {r['rtl_wall_s']:9.4f} s   (simulation alone {r['rtl_sim_wall_s']:.4f} s;"
              f" Verilator build cached)")
    print(f"  cycle run_bundle              {r['model_wall_s']:9.4f} s   (timing and results)")
    if r["native_timing_s"] is not None:
        print(f"  cycle timing only, native     {r['native_timing_s']:9.4f} s   (cycles, counters, activity)")
    else:
        print("  cycle timing only, native          n/a   (no C++ compiler found)")
    print(f"  cycle timing only, python     {r['python_timing_s']:9.4f} s")
    if "rtl_wall_s" in r:
        verdict = "PASS" if min(r["speedup_timing_vs_run"], r["speedup_timing_vs_sim"]) >= 100 else "MISS"
        print(f"  cycles and all counters equal: {r['counters_equal']}")
        print(f"  speedup, timing only vs RTL run_bundle:        {r['speedup_timing_vs_run']:8.0f}x")
        print(f"  speedup, timing only vs RTL simulation alone:  {r['speedup_timing_vs_sim']:8.0f}x")
        print(f"  speedup, run_bundle vs run_bundle:             {r['speedup_run']:8.0f}x   (the model's run also "
              f"computes every result)")
        print(f"  speedup, python timing vs RTL run_bundle:      {r['speedup_python_vs_run']:8.0f}x")
        print(f"  target: the timing model at least 100x faster than the RTL (both timing figures): {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
