"""``npuforge power model-error``: the cycle model's energy estimate against the RTL's.

For each config, kernel cases (:func:`npuforge.compiler.cycle_model.cases.kernel_cases`) run
on the probed RTL (one simulator process, every case a job) and on the cycle model. The
toggle table (:mod:`npuforge.compiler.cycle_model.energy`) is fitted on the *training* cases
(the quick set, one small case per kernel, and :data:`TRAIN_EXTRA`) and the error per unit,
on chip (all but DRAM) and in total is reported for every case; the :data:`HELD_OUT` cases
are not fitted on, so their error is what a new program sees. DRAM energy is exact (beats
are counted by the cycle model), so the total error is small whenever DRAM dominates: the
on-chip column is the harder figure.
"""

from __future__ import annotations

from ..compiler.cycle_model.energy import estimate_energy, fit_toggle_table, write_toggle_table
from .energy import UNITS

__all__ = ["HELD_OUT", "TRAIN_EXTRA", "model_error", "format_model_error"]

TRAIN_EXTRA = ("matmul-single-buffer", "matmul-128x64x96", "relu-64", "add-64", "maxpool-default")
# Held-out cases (names of kernel_cases): matmul shapes and tilings, conv2d variants, odd vector shapes.
HELD_OUT = ("matmul-64", "matmul-edge", "matmul-quant", "matmul-no-stream", "conv2d-stride2-relu", "conv2d-1x1",
            "relu-odd", "add-odd", "maxpool-3x3s1")


def model_error(config, *, held_out=HELD_OUT, train_extra=TRAIN_EXTRA, seed: int = 0, write: bool = False,
                model=None, quiet: bool = True) -> dict:
    """Run the cases at both fidelities, fit the toggle table, and measure the energy error.

    Parameters
    ----------
    config : HwConfig
    held_out : sequence of str
        Case names to evaluate without fitting on them (empty: only the training cases).
    train_extra : sequence of str
        Cases fitted on besides the quick set.
    seed : int
        Data seed of every case.
    write : bool
        Also write the table to ``configs/energy/cycle-<config>.yaml``.
    model : EnergyModel, optional
    quiet : bool

    Returns
    -------
    dict
        ``config``, ``table`` (the fitted table; ``path`` when written) and ``cases``: per case
        ``name``, ``train`` (bool), ``rtl`` / ``cycle`` ({unit: pJ}, ``onchip`` and ``total``)
        and ``error`` ({unit: relative error, ``onchip``, ``total``}).

    Raises
    ------
    RuntimeError
        The cycle model and the RTL disagree on the cycles of a case (the model is not exact).
    """
    from ..compiler.cycle_model import simulate
    from ..compiler.cycle_model.cases import build_case, kernel_cases
    from .runner import run_rtl
    train = kernel_cases(config, quick=True)
    every = {name: case for name, *case in kernel_cases(config)}
    cases = [(name, True, k, s, o) for name, k, s, o in train]
    cases += [(name, True, *every[name]) for name in train_extra if name in every]
    cases += [(name, False, *every[name]) for name in held_out if name in every]
    built = [build_case(config, k, s, o, seed) for _, _, k, s, o in cases]
    jobs = [(b.builder.image().words, b.dram) for b in built]
    rtl = run_rtl(jobs, config, power=True, quiet=quiet)
    cyc = [simulate(words, config) for words, _ in jobs]
    for (name, *_), r, c in zip(cases, rtl, cyc):
        if r.cycles != c.cycles:
            raise RuntimeError(f"{config.name} {name}: cycle model {c.cycles} cycles, RTL {r.cycles}")
    samples = [(c.activity, c.counters, r.extra["activity"]) for (_, tr, *_), r, c in zip(cases, rtl, cyc) if tr]
    source = (f"kernel_cases({config.name}, quick=True), seed {seed}: "
              + ", ".join(name for name, tr, *_ in cases if tr))
    table = fit_toggle_table(samples, config, source)
    if write:
        table["path"] = str(write_toggle_table(table))
    from .energy import energy_report
    out = []
    for (name, tr, *_), r, c in zip(cases, rtl, cyc):
        truth = energy_report(r.extra["activity"], r.counters, config, model)
        est = estimate_energy(c.activity, c.counters, config, table, model)
        t, e = dict(truth["energy_breakdown_pj"]), dict(est["energy_breakdown_pj"])
        t["onchip"], e["onchip"] = truth["energy_pj"] - t["dram"], est["energy_pj"] - e["dram"]
        t["total"], e["total"] = truth["energy_pj"], est["energy_pj"]
        err = {u: (e[u] / t[u] - 1 if t[u] else 0.0) for u in t}
        out.append({"name": name, "train": tr, "cycles": r.cycles, "rtl": t, "cycle": e, "error": err})
    return {"config": config.name, "table": table, "cases": out}


def format_model_error(result: dict) -> list[str]:
    """Lines: per case, the error of the cycle model's energy per unit and in total."""
    units = list(UNITS) + ["onchip", "total"]
    head = f"{'case':22} {'set':5} {'rtl pJ':>11} " + " ".join(f"{u[:7]:>8}" for u in units)
    lines = [f"cycle-model energy vs RTL on {result['config']} (error per unit; fitted on 'train', "
             f"'held' cases unseen)", head]
    worst = {(t, k): 0.0 for t in ("train", "held") for k in ("onchip", "total")}
    for c in result["cases"]:
        tag = "train" if c["train"] else "held"
        for k in ("onchip", "total"):
            worst[tag, k] = max(worst[tag, k], abs(c["error"][k]))
        lines.append(f"{c['name']:22} {tag:5} {c['rtl']['total']:>11.4g} "
                     + " ".join(f"{c['error'][u]:>+8.1%}" for u in units))
    lines.append(f"worst |error|: total: train {worst['train', 'total']:.1%}, held out {worst['held', 'total']:.1%}; "
                 f"on chip: train {worst['train', 'onchip']:.1%}, held out {worst['held', 'onchip']:.1%}")
    return lines
