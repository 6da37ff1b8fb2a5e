"""Side-by-side speed of the cycle model and the RTL co-simulation on one matmul bundle.

``python -m npuforge.compiler.cycle_model.bench [--config 8x8] [--m 256 --k 256 --n 256]``
builds the bundle (under ``build/bench``), runs it at ``rtl`` and ``cycle`` fidelity in
this one process, checks that both pass with the same cycles and counters, and prints:

- the RTL figures: the whole ``run_bundle`` call (build check, process start, loading,
  simulation) and the simulation alone (``sim_wall_s``);
- the model figures: the whole ``cycle`` fidelity call (timing *and* results, with the
  reference simulator's per-instruction code) and timing alone (cycles and counters,
  what a search loop needs), the best of ``--repeat`` runs;
- the ratios.
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
        Timing-only model runs; the best is reported.
    out_dir : path, optional
        Bundle folder (default ``build/bench/matmul-<config>-<m>x<k>x<n>``).
    rtl : bool
        Also run the RTL (False: the model's figures only).

    Returns
    -------
    dict
        ``cycles``, ``rtl_wall_s``, ``rtl_sim_wall_s``, ``model_wall_s`` (the cycle fidelity
        call), ``model_timing_s`` (timing alone), the ``speedup_*`` ratios and ``counters_equal``.

    Raises
    ------
    RuntimeError
        When a fidelity fails the run or the two disagree on cycles or counters.
    """
    from ...config import load_config
    from ...run import run_bundle
    from ..bundle import load_bundle, make_bundle
    from . import simulate

    cfg = load_config(config_name)
    if out_dir is None:
        from ...cosim.build import repo_build_dir
        out_dir = repo_build_dir() / "bench" / f"matmul-{cfg.name}-{m}x{k}x{n}"
    path = make_bundle("matmul", {"m": m, "k": k, "n": n}, cfg, 0, out_dir)
    out = {"config": cfg.name, "shape": f"{m}x{k}x{n}"}
    model = run_bundle(path, "cycle")
    if not model["passed"]:
        raise RuntimeError(f"cycle fidelity failed: {model['error'] or model['mismatch']}")
    bundle = load_bundle(path)
    best = float("inf")
    for _ in range(max(1, repeat)):
        t0 = time.perf_counter()
        r = simulate(bundle.image, cfg)
        best = min(best, time.perf_counter() - t0)
    out.update(cycles=model["cycles"], model_wall_s=model["wall_s"], model_timing_s=best,
               instructions=model["counters"]["instructions"])
    if rtl:
        ref = run_bundle(path, "rtl")
        if not ref["passed"]:
            raise RuntimeError(f"rtl fidelity failed: {ref['error'] or ref['mismatch']}")
        if ref["cycles"] != model["cycles"] or ref["counters"] != model["counters"]:
            raise RuntimeError(f"the model disagrees with the RTL: cycles {model['cycles']} vs {ref['cycles']}, "
                               f"counters {model['counters']} vs {ref['counters']}")
        out.update(rtl_wall_s=ref["wall_s"], rtl_sim_wall_s=ref.get("sim_wall_s"), counters_equal=True,
                   speedup_run=ref["wall_s"] / model["wall_s"],
                   speedup_timing_vs_sim=ref["sim_wall_s"] / best,
                   speedup_timing_vs_run=ref["wall_s"] / best)
    assert r.cycles == model["cycles"]
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
    print(f"matmul {r['shape']} on {r['config']}: {r['cycles']} cycles, {r['instructions']} instructions")
    if "rtl_wall_s" in r:
        print(f"  rtl   run_bundle        {r['rtl_wall_s']:9.3f} s   (simulation alone {r['rtl_sim_wall_s']:.3f} s)")
    print(f"  cycle run_bundle        {r['model_wall_s']:9.3f} s   (timing and results)")
    print(f"  cycle timing only       {r['model_timing_s']:9.4f} s   (cycles and counters; best of {args.repeat})")
    if "rtl_wall_s" in r:
        print(f"  cycles and all counters equal: {r['counters_equal']}")
        print(f"  speedup, run_bundle vs run_bundle:          {r['speedup_run']:8.0f}x")
        print(f"  speedup, timing only vs RTL run_bundle:     {r['speedup_timing_vs_run']:8.0f}x")
        print(f"  speedup, timing only vs RTL simulation:     {r['speedup_timing_vs_sim']:8.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
