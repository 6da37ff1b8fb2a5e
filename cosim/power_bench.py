"""Measure what toggle counting costs: the same program on the plain and the probed RTL build.

``npuforge power bench [--configs 4x4,8x8] [--m 256 --k 256 --n 256]`` (``make bench-power``)
prints simulated cycles per second with and without counting, and their ratio.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

__all__ = ["measure_counting_cost"]


def measure_counting_cost(config, shape: dict, repeats: int = 2, seed: int = 0) -> dict:
    """Run one matmul on the RTL of ``config`` without and with activity counting.

    Parameters
    ----------
    config : HwConfig
    shape : dict
        Matmul shape (``m``, ``k``, ``n``).
    repeats : int
        Jobs per simulator process; the best rate counts (timings vary on a shared machine).
    seed : int

    Returns
    -------
    dict
        ``cycles``, ``plain_cps``, ``power_cps`` (simulated cycles per second, go to finished)
        and ``cost`` (plain / power).
    """
    from ..compiler.bundle import load_bundle, make_bundle
    from .runner import run_rtl
    with tempfile.TemporaryDirectory() as tmp:
        bundle = load_bundle(make_bundle("matmul", shape, config, seed, Path(tmp) / "b"))
        jobs = [(bundle.image, bundle.dram)] * repeats
        plain = run_rtl(jobs, config, quiet=True)
        power = run_rtl(jobs, config, quiet=True, power=True)
    if plain[0].cycles != power[0].cycles:
        raise RuntimeError(f"probed build ran {power[0].cycles} cycles, plain {plain[0].cycles}")
    p, q = max(r.cycles_per_s for r in plain), max(r.cycles_per_s for r in power)
    return {"config": config.name, "cycles": plain[0].cycles, "plain_cps": round(p), "power_cps": round(q),
            "cost": round(p / q, 2)}
