"""The co-simulation speed benchmark: ``npuforge bench cosim`` (``make bench-cosim``).

One matmul bundle per config runs on both RTL engines built from the same Verilog, the
plain C++ harness (:mod:`npuforge.cosim.harness`) and the cocotb flow
(:mod:`npuforge.cosim.runner`), each without and with toggle counting. Reported per config:
simulated cycles per second (best of ``repeats`` jobs in one simulator process, go to
finished), the ratio cocotb / harness against the issue's targets, what counting costs
(target at most 2x), each build's time (cold or cached), each simulator process's peak
resident memory (16x16 target: under 2 GiB) and the cycle model's speed on the same program.
Every run must give the same cycles, counters, DRAM and activity, or the benchmark fails.

Peak memory is each simulator process's own ``VmHWM`` (peak resident set since its exec):
the harness reports it itself; for the cocotb flow, which runs in a child Python process
here, a thread of that process reads it from ``/proc`` of the simulator every 20 ms. (A
parent's ``getrusage`` of a child is no measure: a vforked child's maximum counts the parent's
pages until the exec.)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

__all__ = ["bench_cosim", "format_bench", "RATIO_TARGETS", "COUNTING_TARGET", "RSS_TARGET_BYTES"]

# cocotb cycles/s over harness cycles/s the issue asks for (issue 5, "Cosim speed").
RATIO_TARGETS = {"4x4": 0.30, "8x8": 0.50, "16x16": 0.75}
COUNTING_TARGET = 2.0
RSS_TARGET_BYTES = {"16x16": 2 << 30}


def _verdict(ok: bool | None) -> str:
    return "-" if ok is None else ("PASS" if ok else "MISS")


def _build_all(config) -> dict:
    """Build (or reuse) the four simulators; ``{variant: {"s", "cached"}}``."""
    from .build import build_rtl
    from .harness_build import build_harness
    from .power_build import build_power_rtl
    out = {}
    for name, fn in (("cocotb", lambda: build_rtl(config)), ("cocotb_count", lambda: build_power_rtl(config)),
                     ("harness", lambda: build_harness(config)),
                     ("harness_count", lambda: build_harness(config, power=True))):
        t0 = time.perf_counter()
        b = fn()
        out[name] = {"s": round(time.perf_counter() - t0, 2), "cached": not b.built_now,
                     "directory": str(b.directory)}
    return out


def _children_peak_rss(stop: threading.Event, peak: dict, period_s: float = 0.02) -> None:
    """Until ``stop``: the largest ``VmHWM`` (bytes) of this process's direct children, in ``peak["bytes"]``."""
    me = str(os.getpid())
    python = os.path.realpath(sys.executable)
    while not stop.wait(period_s):
        for d in Path("/proc").iterdir():
            if not d.name.isdigit():
                continue
            try:
                stat = (d / "stat").read_text()
                # Skip a child still between fork and exec: it shows this interpreter's memory.
                if stat[stat.rindex(")") + 2:].split()[1] != me or os.path.realpath(d / "exe") == python:
                    continue
                for line in (d / "status").read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        peak["bytes"] = max(peak["bytes"], int(line.split()[1]) * 1024)
            except (OSError, ValueError, IndexError):
                continue        # the process ended meanwhile


def _cocotb_child(config_name: str, bundle_dir: str, power: bool, repeats: int) -> dict:
    """In a child process: the cocotb runs and the simulator's peak memory."""
    from ..compiler.bundle import load_bundle
    from ..config import load_config
    from .runner import run_rtl
    cfg = load_config(config_name)
    b = load_bundle(bundle_dir)
    stop, peak = threading.Event(), {"bytes": 0}
    watcher = threading.Thread(target=_children_peak_rss, args=(stop, peak), daemon=True)
    watcher.start()
    try:
        rs = run_rtl([(b.image, b.dram)] * repeats, cfg, quiet=True, power=power)
    finally:
        stop.set()
        watcher.join()
    return {"cycles": rs[0].cycles, "cps": [r.cycles_per_s for r in rs], "counters": rs[0].counters,
            "dram_sha": _sha(rs[0].dram), "activity": rs[0].extra.get("activity"),
            "error": rs[0].error.name, "max_rss_bytes": peak["bytes"]}


def _sha(a: np.ndarray) -> str:
    import hashlib
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def _run_cocotb(config, bundle_dir: Path, power: bool, repeats: int) -> dict:
    cmd = [sys.executable, "-m", "npuforge.cosim.bench_cosim", config.name, str(bundle_dir), str(int(power)),
           str(repeats)]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"cocotb run on {config.name} failed:\n{p.stderr[-3000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def _run_harness(config, bundle, power: bool, repeats: int) -> dict:
    from .runner import run_rtl
    rs = run_rtl([(bundle.image, bundle.dram)] * repeats, config, quiet=True, power=power, engine="harness")
    return {"cycles": rs[0].cycles, "cps": [r.cycles_per_s for r in rs], "counters": rs[0].counters,
            "dram_sha": _sha(rs[0].dram), "activity": rs[0].extra.get("activity"),
            "error": rs[0].error.name, "max_rss_bytes": max(r.extra["max_rss_bytes"] for r in rs)}


def _cycle_model(bundle, config, repeats: int = 3) -> dict:
    from ..compiler.cycle_model import simulate
    best, cycles = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        res = simulate(bundle.image, config)
        best = min(best, time.perf_counter() - t0)
        cycles = res.cycles
    return {"cycles": int(cycles), "s": best, "cps": cycles / best if best > 0 else 0.0}


def bench_cosim(configs, shape: dict, *, seed: int = 0, repeats: int = 2, progress=None) -> dict:
    """Measure both RTL engines, with and without toggle counting, on one matmul per config.

    Parameters
    ----------
    configs : list of HwConfig
    shape : dict
        Matmul shape (``m``, ``k``, ``n``).
    seed : int
        Input data seed of the bundle.
    repeats : int
        Jobs per simulator process; the best rate counts (timings vary on a shared machine).
    progress : callable, optional
        Called with a line of text as each step starts.

    Returns
    -------
    dict
        ``shape``, ``objcache`` and ``rows``: per config ``cycles``, ``cps`` (cycles/s of
        ``harness``, ``harness_count``, ``cocotb``, ``cocotb_count``), ``max_rss_bytes`` (same
        keys), ``builds`` (same keys: ``s``, ``cached``), ``ratio`` / ``ratio_count``
        (cocotb over harness) with ``ratio_target``, ``counting_cost`` (harness and cocotb),
        ``cycle_model`` (``cycles``, ``s``, ``cps``) and the PASS/MISS ``verdicts``.

    Raises
    ------
    RuntimeError
        The engines disagree (cycles, counters, DRAM, error or activity) or a run failed.
    """
    from ..compiler.bundle import load_bundle, make_bundle
    from .harness_build import harness_objcache
    say = progress or (lambda s: None)
    rows = []
    for config in configs:
        with tempfile.TemporaryDirectory() as tmp:
            say(f"{config.name}: building (or reusing) the four simulators...")
            builds = _build_all(config)
            bdir = make_bundle("matmul", shape, config, seed, Path(tmp) / "b")
            bundle = load_bundle(bdir)
            runs = {}
            for variant, power in (("harness", False), ("harness_count", True)):
                say(f"{config.name}: {variant}...")
                runs[variant] = _run_harness(config, bundle, power, repeats)
            for variant, power in (("cocotb", False), ("cocotb_count", True)):
                say(f"{config.name}: {variant}...")
                runs[variant] = _run_cocotb(config, bdir, power, repeats)
            say(f"{config.name}: cycle model...")
            cm = _cycle_model(bundle, config)
        _check_agree(config.name, runs)
        cps = {k: max(v["cps"]) for k, v in runs.items()}
        target = RATIO_TARGETS.get(config.name)
        ratio, ratio_count = cps["cocotb"] / cps["harness"], cps["cocotb_count"] / cps["harness_count"]
        cost = {"harness": cps["harness"] / cps["harness_count"], "cocotb": cps["cocotb"] / cps["cocotb_count"]}
        rss = {k: v["max_rss_bytes"] for k, v in runs.items()}
        rss_target = RSS_TARGET_BYTES.get(config.name)
        verdicts = {
            "ratio": None if target is None else ratio >= target,
            "ratio_count": None if target is None else ratio_count >= target,
            "counting_cost_harness": cost["harness"] <= COUNTING_TARGET,
            "counting_cost_cocotb": cost["cocotb"] <= COUNTING_TARGET,
            "rss": None if rss_target is None else max(rss.values()) < rss_target,
        }
        rows.append({"config": config.name, "cycles": runs["harness"]["cycles"], "cps": cps, "max_rss_bytes": rss,
                     "builds": {k: {"s": v["s"], "cached": v["cached"]} for k, v in builds.items()},
                     "ratio": ratio, "ratio_count": ratio_count, "ratio_target": target, "counting_cost": cost,
                     "cycle_model": cm, "cycle_model_exact": cm["cycles"] == runs["harness"]["cycles"],
                     "verdicts": verdicts})
    return {"shape": dict(shape), "seed": seed, "repeats": repeats, "objcache": harness_objcache(), "rows": rows}


def _check_agree(name: str, runs: dict) -> None:
    ref = runs["harness"]
    for variant, r in runs.items():
        for key in ("cycles", "counters", "dram_sha", "error"):
            if r[key] != ref[key]:
                raise RuntimeError(f"{name}: {variant} gives {key} {r[key]!r}, the harness {ref[key]!r}")
    if runs["harness_count"]["activity"] != runs["cocotb_count"]["activity"]:
        raise RuntimeError(f"{name}: the harness and cocotb count different activity")


def format_bench(result: dict) -> str:
    """The benchmark as text tables (what ``npuforge bench cosim`` prints)."""
    s = result["shape"]
    out = [f"matmul {s['m']}x{s['k']}x{s['n']} (seed {result['seed']}), simulated cycles/s, best of "
           f"{result['repeats']} jobs per simulator process",
           "", f"{'config':7} {'cycles':>10} {'harness':>11} {'harness+cnt':>11} {'cocotb':>11} {'cocotb+cnt':>11} "
           f"{'cycle model':>11}"]
    for r in result["rows"]:
        c = r["cps"]
        cm = f"{r['cycle_model']['cps']:,.0f}" + ("" if r["cycle_model_exact"] else "!")
        out.append(f"{r['config']:7} {r['cycles']:>10,} {c['harness']:>11,.0f} {c['harness_count']:>11,.0f} "
                   f"{c['cocotb']:>11,.0f} {c['cocotb_count']:>11,.0f} {cm:>11}")
    out += ["", f"{'config':7} {'cocotb/harness':>22} {'same, counting':>22} {'counting cost harness':>22} "
            f"{'counting cost cocotb':>22}"]
    for r in result["rows"]:
        v, t = r["verdicts"], r["ratio_target"]
        tt = f">={t:.0%}" if t is not None else ""
        cells = [f"{r['ratio']:.0%} {tt} {_verdict(v['ratio'])}",
                 f"{r['ratio_count']:.0%} {tt} {_verdict(v['ratio_count'])}",
                 f"{r['counting_cost']['harness']:.2f}x <=2x {_verdict(v['counting_cost_harness'])}",
                 f"{r['counting_cost']['cocotb']:.2f}x <=2x {_verdict(v['counting_cost_cocotb'])}"]
        out.append(f"{r['config']:7} " + " ".join(f"{c:>22}" for c in cells))
    out += ["", f"builds (s, cold = built now, cached = reused; objcache: {result['objcache'] or 'none'}) "
            "and peak RSS of the simulator process (MiB)",
            f"{'config':7} {'variant':14} {'build':>16} {'peak RSS':>9}"]
    for r in result["rows"]:
        for k in ("harness", "harness_count", "cocotb", "cocotb_count"):
            b = r["builds"][k]
            out.append(f"{r['config']:7} {k:14} {b['s']:>9.2f} {'cached' if b['cached'] else 'cold':>6} "
                       f"{r['max_rss_bytes'][k] / 2**20:>9.0f}")
        if r["verdicts"]["rss"] is not None:
            out.append(f"{r['config']:7} peak RSS < {RSS_TARGET_BYTES[r['config']] >> 30} GiB: "
                       f"{_verdict(r['verdicts']['rss'])}")
    if any(not r["cycle_model_exact"] for r in result["rows"]):
        out.append("! the cycle model's cycle count differs from the RTL's")
    return "\n".join(out)


if __name__ == "__main__":
    # The child process of _run_cocotb: config, bundle folder, power (0/1), repeats.
    name, bundle_dir, power, reps = sys.argv[1:5]
    print(json.dumps(_cocotb_child(name, bundle_dir, power == "1", int(reps))))
