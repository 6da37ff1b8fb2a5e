"""Random programs on the RTL and on the reference simulator: identical DRAM, error codes and indices.

``4x4-v2``/``8x8-v2`` are the presets with ``vector_stages: 2`` (forwarding and bubbles), ``-v2d2``
also with ``dispatch_stages: 2`` (the 4x4 board point's settings).
CI size: 200 short programs per preset (a quarter of them illegal, every illegal case
included), all in one simulator process per preset. ``--runslow`` adds 2000 per preset.
"""

import collections

import numpy as np
import pytest

from npuforge.compiler.cycle_model.cases import case_config
from npuforge.cosim.randprog import random_programs
from npuforge.cosim.runner import run_rtl
from npuforge.isa import refsim
from npuforge.isa.spec import ErrorCode

pytestmark = pytest.mark.rtl


def differential(preset: str, count: int, seed: int, size: str = "short") -> collections.Counter:
    """Run ``count`` random programs on both; returns counts per kind; fails on the first mismatches."""
    cfg = case_config(preset)
    progs = list(random_programs(cfg, count, seed=seed, size=size))
    results = run_rtl([(p.words, p.dram) for p in progs], cfg, max_cycles=2_000_000, quiet=True)
    failures, counts = [], collections.Counter()
    for p, r in zip(progs, results):
        try:
            ref = refsim.run(p.words, p.dram, cfg, step_limit=1_000_000)
            code, pc = ErrorCode.NONE, 0
        except refsim.SimError as e:
            ref, code, pc = None, e.code, e.pc
        what = None
        if r.timed_out:
            what = "RTL watchdog fired"
        elif r.error != code or (code != ErrorCode.NONE and r.error_pc != pc):
            what = f"reference {code.name}@{pc}, RTL {r.error.name}@{r.error_pc}"
        elif code == ErrorCode.NONE:
            diff = np.flatnonzero(r.dram != ref.dram)
            if diff.size:
                a = int(diff[0])
                what = f"DRAM differs at {diff.size} bytes, first {a:#x}: expected {ref.dram[a]}, got {r.dram[a]}"
        if what:
            failures.append(f"{preset} seed {p.seed} ({p.kind}): {what}")
        counts[p.kind] += 1
    assert not failures, "\n".join(failures[:10]) + f"\n({len(failures)} of {count} programs differ)"
    assert r.counters["cycles"] > 0
    return counts


@pytest.mark.parametrize("preset", ["4x4", "8x8", "16x16", "4x4-v2", "4x4-v2d2"])
def test_random_programs_match_reference(preset):
    counts = differential(preset, 200, seed=0)
    assert counts["legal"] == 150 and len(counts) > 10


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["4x4", "8x8", "16x16", "4x4-v2", "8x8-v2", "8x8-v2d2"])
def test_many_random_programs_match_reference(preset):
    differential(preset, 2000, seed=100_000)
    differential(preset, 200, seed=500_000, size="long")
