"""The cycle model against the RTL: total cycles, every counter, error code and index, exactly.

CI size, per preset, in one simulator process: 50 random programs (a quarter of them
illegal, so deadlocks and dispatch errors are timed too) and one small case of every
kernel. ``--runslow``: 1,000 random programs, long ones, and every kernel at several shapes.
"""

import pytest

from npuforge.compiler.cycle_model import native, simulate
from npuforge.compiler.cycle_model.cases import build_case, case_config, kernel_cases
from npuforge.cosim.randprog import random_programs

pytestmark = pytest.mark.rtl
ENGINES = ("native", "python") if native.available() else ("python",)


def _compare(cfg, jobs):
    """Run (label, words, dram) jobs on the RTL and the model; the list of differences."""
    from npuforge.cosim.runner import run_rtl
    results = run_rtl([(w, d) for _, w, d in jobs], cfg, max_cycles=5_000_000, quiet=True)
    problems = []
    for (label, words, _), r in zip(jobs, results):
        assert not r.timed_out, f"{cfg.name} {label}: RTL watchdog fired"
        want = (r.cycles, r.error.name, r.error_pc if r.error.name != "NONE" else 0)
        for engine in ENGINES:
            m = simulate(words, cfg, engine=engine)
            got = (m.cycles, m.error.name, m.error_pc if m.error.name != "NONE" else 0)
            diff = {k: (v, m.counters[k]) for k, v in r.counters.items() if m.counters[k] != v}
            if got != want or diff:
                problems.append(f"{cfg.name} {label}: RTL {want}, {engine} model {got}; counters (RTL, model) {diff}")
    return problems


def _jobs(cfg, count, seed, size="short", kernels="quick"):
    jobs = [(f"seed {p.seed} ({p.kind})", p.words, p.dram)
            for p in random_programs(cfg, count, seed=seed, size=size)]
    if kernels:
        for name, kind, shape, opts in kernel_cases(cfg, quick=kernels == "quick"):
            c = build_case(cfg, kind, shape, opts)
            jobs.append((name, c.builder.image().words, c.dram))
    return jobs


@pytest.mark.parametrize("preset", ["4x4", "8x8", "16x16", "4x4-v2", "4x4-v2d2"])
def test_model_matches_rtl(preset):
    cfg = case_config(preset)
    jobs = _jobs(cfg, 50, seed=3000)
    problems = _compare(cfg, jobs)
    assert not problems, "\n".join(problems[:10]) + f"\n({len(problems)} of {len(jobs)} runs differ)"


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["4x4", "8x8", "16x16", "4x4-v2", "8x8-v2", "8x8-v2d2"])
def test_model_matches_rtl_at_full_count(preset):
    cfg = case_config(preset)
    jobs = _jobs(cfg, 1000, seed=20_000, kernels="all") + _jobs(cfg, 60, seed=50_000, size="long", kernels=None)
    problems = _compare(cfg, jobs)
    assert not problems, "\n".join(problems[:10]) + f"\n({len(problems)} of {len(jobs)} runs differ)"
