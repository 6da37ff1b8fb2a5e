"""``npuforge power calibrate``: fit the MAC-energy coefficients against a gate-level reference.

The reference (:mod:`npuforge.cosim.gate_level`) is a yosys gate netlist of the processing
element, wired as a weight-stationary grid, simulated by Verilator with toggle coverage over
the seeded workloads of :mod:`npuforge.cosim.calibrate_workloads`; each net's flips are
weighted by the cell driving it. Per workload, the features are what the RTL probes count
(register flips; operand, partial-sum and partial-product flips).

Two models are compared on every workload (relative error of the PE energy):

(a) *register only*: ``E = c * register flips``, one coefficient; fitted on the random
    workload alone (one calibration) and by least squares over all workloads.
(b) *the fit*: ``E = FLOP * register flips + b_op * operand + b_ps * partial sum + b_pp *
    partial product``: the flip-flops' part is exact (their flips are the register flips);
    the logic's coefficients are fitted by non-negative least squares on relative errors
    over all workloads. A leave-one-workload-out error is printed too, so the fit is judged
    on data it did not see.

Units: the reference counts AND2-equivalent flips. They become pJ by one anchor: the logic
energy per MAC on the random workload equals an 8-bit multiply plus a 32-bit add at 45 nm
(0.2 + 0.1 pJ, Horowitz ISSCC 2014, the source of ``default.yaml``). The output file is
``default.yaml`` with the MAC coefficients replaced and a ``calibration`` section holding the
data, the seed and the fit; :func:`npuforge.cosim.energy.load_energy_model` reads it.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import yaml

from .calibrate_workloads import FEATURES, WORKLOADS, grid_features, make_stimulus
from .energy import nonnegative_lstsq
from .gate_level import (
    CELL_WEIGHTS,
    FLOP_WEIGHT,
    MAX_SIDE,
    YOSYS_SCRIPT,
    build_gate_level_grid,
)

__all__ = ["run_calibration", "fit_coefficients", "write_calibration", "format_calibration", "DEFAULT_SEED",
           "ANCHOR_PJ_PER_MAC", "default_output"]

DEFAULT_SEED = 2026
# 8-bit multiply + 32-bit add at 45 nm (Horowitz, ISSCC 2014, Fig. 1.1.9).
ANCHOR_PJ_PER_MAC = 0.3
_COEF_NAMES = {"mac_operand_toggles": "mac_operand_toggle_pj", "mac_psum_toggles": "mac_psum_toggle_pj",
               "mac_pp_toggles": "mac_pp_toggle_pj"}


def default_output(config_name: str) -> Path:
    """``configs/energy/calibration-<config>.yaml`` in the checkout."""
    from .energy import DEFAULT_ENERGY_FILE
    return DEFAULT_ENERGY_FILE.with_name(f"calibration-{config_name}.yaml")


def fit_coefficients(rows: list[dict], exclude: str | None = None) -> dict:
    """Fit (a) and (b) of the module docstring over the workloads in ``rows``.

    Parameters
    ----------
    rows : list of dict
        Per workload: ``name``, ``registers``, the :data:`FEATURES` and ``reference``
        (``{"flops", "logic", "total"}`` units).
    exclude : str, optional
        Leave this workload out of the fit.

    Returns
    -------
    dict
        ``register_only`` (units per register flip, least squares over all),
        ``register_only_random`` (fitted on ``random`` alone, when present) and
        ``logic`` ({feature: units per flip}).
    """
    use = [r for r in rows if r["name"] != exclude]
    e = np.array([r["reference"]["total"] for r in use], float)
    reg = np.array([r["registers"] for r in use], float)
    # Relative errors: divide every row by its reference energy.
    c_all = float((reg / e) @ np.ones(len(use)) / ((reg / e) @ (reg / e)))
    out = {"register_only": c_all}
    rand = [r for r in use if r["name"] == "random"]
    if rand:
        out["register_only_random"] = rand[0]["reference"]["total"] / rand[0]["registers"]
    x = np.array([[r[f] for f in FEATURES] for r in use], float) / e[:, None]
    y = (e - FLOP_WEIGHT * reg) / e
    beta = nonnegative_lstsq(x, y)
    out["logic"] = {f: float(b) for f, b in zip(FEATURES, beta)}
    return out


def _predict(row: dict, fit: dict) -> dict:
    logic = sum(fit["logic"][f] * row[f] for f in FEATURES)
    return {"register_only": fit["register_only"] * row["registers"],
            "register_only_random": fit.get("register_only_random", 0.0) * row["registers"],
            "fit": FLOP_WEIGHT * row["registers"] + logic}


def run_calibration(config="4x4", *, cycles: int = 8000, seed: int = DEFAULT_SEED, workloads=None,
                    grid: tuple[int, int] | None = None, quiet: bool = False) -> dict:
    """Build the gate-level grid, run the workloads, fit, and return the calibration.

    Parameters
    ----------
    config : str or HwConfig
        Sets the grid (``rows`` x ``cols``, each capped at 8).
    cycles : int
        Cycles per workload.
    seed : int
        Workload ``i`` uses ``seed + i``.
    workloads : sequence of str, optional
        Default: all of :data:`WORKLOADS`.
    grid : (int, int), optional
        Grid shape instead of the config's (a smaller one builds faster: tests use 2x2).
    quiet : bool

    Returns
    -------
    dict
        ``config``, ``grid``, ``cycles``, ``seed``, ``rows`` (per workload: features,
        ``reference`` units, ``macs``, ``errors``), ``fit`` (units), ``unit_pj`` and
        ``coefficients_pj`` (the energy-file keys).

    Raises
    ------
    ValueError
        Fewer than three workloads or no ``random`` one (the pJ anchor), or cycles < 64.
    RuntimeError
        A gate-level register count differs from the replay (the reference is not the PE).
    """
    from ..config import HwConfig, load_config
    cfg = config if isinstance(config, HwConfig) else load_config(config)
    names = list(workloads or WORKLOADS)
    if len(names) < 3 or "random" not in names:
        raise ValueError(f"calibration needs at least three workloads including 'random', not {names}")
    if cycles < 64:
        raise ValueError(f"calibration cycles must be >= 64, not {cycles}")
    r_, c_ = grid or (min(cfg.rows, MAX_SIDE), min(cfg.cols, MAX_SIDE))
    grid = build_gate_level_grid(r_, c_, quiet=quiet)
    rows = []
    for i, name in enumerate(names):
        stim = make_stimulus(name, r_, c_, cycles, seed + i)
        toggles = grid.run(stim.act, stim.weights, stim.load_mask, name)
        feats = grid_features(stim, r_, c_)
        flops = grid.flop_toggles(toggles)
        if flops != {k: feats[k] for k in ("a", "w", "p")}:
            raise RuntimeError(f"workload {name}: gate-level register flips {flops} differ from the replay's "
                               f"{ {k: feats[k] for k in ('a', 'w', 'p')} }")
        rows.append({"name": name, "seed": seed + i, "macs": cycles * r_ * c_, **feats,
                     "reference": grid.energy_units(toggles)})
    fit = fit_coefficients(rows)
    for row in rows:
        loo = fit_coefficients(rows, exclude=row["name"]) if len(rows) > 3 else fit
        pred = _predict(row, fit)
        e = row["reference"]["total"]
        row["errors"] = {k: v / e - 1 for k, v in pred.items()}
        row["errors"]["fit_leave_one_out"] = _predict(row, loo)["fit"] / e - 1
    rand = next(r for r in rows if r["name"] == "random")
    unit_pj = ANCHOR_PJ_PER_MAC * rand["macs"] / rand["reference"]["logic"]
    coefficients = {_COEF_NAMES[f]: fit["logic"][f] * unit_pj for f in FEATURES}
    return {"config": cfg.name, "grid": f"{r_}x{c_}", "cycles": cycles, "seed": seed, "rows": rows, "fit": fit,
            "unit_pj": unit_pj, "coefficients_pj": coefficients}


def _sig(x: float, digits: int = 6) -> float:
    return float(f"{x:.{digits}g}")


def write_calibration(cal: dict, out, base=None) -> Path:
    """Write the energy file: ``base`` (default ``default.yaml``) with the fitted MAC coefficients.

    Returns
    -------
    Path
    """
    from .energy import DEFAULT_ENERGY_FILE
    base = Path(base) if base is not None else DEFAULT_ENERGY_FILE
    raw = yaml.safe_load(base.read_text())
    raw.pop("calibration", None)
    raw.pop("mac_calibration", None)        # this file carries the coefficients itself
    for key, v in cal["coefficients_pj"].items():
        raw[key] = _sig(v)
    data = {
        "command": f"npuforge power calibrate --config {cal['config']} --cycles {cal['cycles']} --seed {cal['seed']}",
        "reference": {"netlist": "yosys gate netlist of hw/pe.py ProcessingElement", "yosys_script": YOSYS_SCRIPT,
                      "grid": cal["grid"], "simulator": "Verilator --coverage-toggle --coverage-underscore",
                      "cell_weights": CELL_WEIGHTS, "glitches": "not counted (zero delay)"},
        "seed": cal["seed"], "cycles_per_workload": cal["cycles"],
        "unit_pj": _sig(cal["unit_pj"]),
        "unit_anchor": f"logic energy per MAC on 'random' = {ANCHOR_PJ_PER_MAC} pJ (8-bit multiply + 32-bit add, "
                       "Horowitz ISSCC 2014, 45 nm)",
        "model": "E_pe = flop_weight * register_flips + sum(logic_units[f] * f)",
        "flop_weight": FLOP_WEIGHT,
        "logic_units_per_flip": {f: _sig(v) for f, v in cal["fit"]["logic"].items()},
        "register_only_units_per_flip": _sig(cal["fit"]["register_only"]),
        "register_only_random_units_per_flip": _sig(cal["fit"]["register_only_random"]),
        "workloads": {r["name"]: {
            "description": WORKLOADS[r["name"]], "seed": r["seed"], "macs": r["macs"],
            "register_flips": {k: r[k] for k in ("a", "w", "p")}, **{f: r[f] for f in FEATURES},
            "reference_units": {k: _sig(v) for k, v in r["reference"].items()},
            "error": {k: round(v, 4) for k, v in r["errors"].items()}} for r in cal["rows"]},
    }
    raw["calibration"] = data
    out = Path(out)
    root = DEFAULT_ENERGY_FILE.parents[2]
    shown = out.resolve().relative_to(root) if out.resolve().is_relative_to(root) else out.name
    header = (f"# Energy coefficients with MAC terms fitted against a gate-level reference.\n"
              f"# Generated by: {data['command']}  (rerun it to regenerate this file; same seed, same bytes)\n"
              f"# Everything but the mac_*_pj keys is copied from {base.name}; its sources hold.\n"
              f"# Use it: NPUFORGE_ENERGY_FILE={shown} npuforge run BUNDLE --fidelity rtl --power\n"
              f"#   (or npuforge.cosim.energy.load_energy_model(path)).\n")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(header + yaml.safe_dump(raw, sort_keys=False, default_flow_style=False, width=110))
    return out


def format_calibration(cal: dict) -> list[str]:
    """Lines of the per-workload error table."""
    lines = [f"MAC energy calibration: {cal['grid']} gate-level PE grid, {cal['cycles']} cycles per workload, "
             f"seed {cal['seed']}",
             f"{'workload':11} {'ref units/MAC':>13} {'reg-only(random)':>17} {'reg-only(LS)':>13} {'fit':>8} "
             f"{'fit(LOO)':>9}"]
    worst = dict.fromkeys(("register_only_random", "register_only", "fit", "fit_leave_one_out"), 0.0)
    for r in cal["rows"]:
        e = r["errors"]
        for k in worst:
            worst[k] = max(worst[k], abs(e[k]))
        lines.append(f"{r['name']:11} {r['reference']['total'] / r['macs']:>13.1f} {e['register_only_random']:>+17.1%} "
                     f"{e['register_only']:>+13.1%} {e['fit']:>+8.1%} {e['fit_leave_one_out']:>+9.1%}")
    lines.append(f"{'worst |err|':11} {'':>13} {worst['register_only_random']:>17.1%} {worst['register_only']:>13.1%} "
                 f"{worst['fit']:>8.1%} {worst['fit_leave_one_out']:>9.1%}")
    co = ", ".join(f"{k}={v:.4g}" for k, v in cal["coefficients_pj"].items())
    lines.append(f"fitted (pJ per flip, 1 unit = {cal['unit_pj'] * 1000:.3g} fJ): {co}")
    return lines


def main_calibrate(config: str, out=None, cycles: int = 8000, seed: int = DEFAULT_SEED) -> Path:
    """The CLI action: run, print, write. Returns the file written."""
    cal = run_calibration(config, cycles=cycles, seed=seed)
    for line in format_calibration(cal):
        print(line)
    path = write_calibration(cal, out or default_output(cal["config"]))
    print(f"wrote {path}", file=sys.stderr)
    return path
