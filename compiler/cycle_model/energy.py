"""Energy for the cycle model: access counts times per-access toggle averages calibrated on the RTL.

The cycle model counts work, not bits: scratchpad / accumulator row reads and writes, array
MACs and weight rows, vector and requantiser rows (:data:`ACTIVITY_NAMES`) and the DRAM beats
and cycles of its counters. A *toggle table* (one YAML per config,
``configs/energy/cycle-<config>.yaml``, written by ``npuforge power model-error --write``)
holds, for every quantity the RTL probes count (:mod:`npuforge.cosim.toggles`: toggles per
group, the MAC counts, reads / writes per SRAM), its mean per unit of cycle-model work,
fitted by non-negative least squares over a few RTL power runs. :func:`estimate_activity`
turns a cycle-model run into an RTL-shaped activity record, and :func:`estimate_energy`
weighs it with the same :class:`~npuforge.cosim.energy.EnergyModel` as the RTL, so the
report keys are the RTL's (``energy_pj``, ``energy_breakdown_pj``, ...), labelled
``energy_fidelity: cycle``.

What it cannot know: the data. Toggles per access are averages over the calibration runs'
(random) data; the error against the RTL is measured and printed by
``npuforge power model-error``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml

from ...cosim.energy import nonnegative_lstsq
from ...cosim.toggles import GROUPS, MAC_KEYS

__all__ = ["FEATURES_OF", "features", "quantities", "fit_toggle_table", "estimate_activity", "estimate_energy",
           "table_path", "load_toggle_table", "write_toggle_table"]

_ENERGY_DIR = Path(__file__).resolve().parents[2] / "configs" / "energy"
_CACHE: dict = {}

# Which cycle-model counts explain which RTL quantity (few columns: a handful of runs fit them).
FEATURES_OF = {
    "toggles.array": ("array_macs", "array_weight_rows", "compute_busy"),
    "toggles.scratchpad": ("spad_reads", "spad_writes"),
    "toggles.accumulator": ("acc_reads", "acc_writes"),
    "toggles.dma": ("dram_read_beats", "dram_write_beats", "load_busy", "store_busy"),
    "toggles.vector": ("vadd_rows", "vmax_rows", "vrelu_rows", "vquant_rows", "requant_rows"),
    # control holds the compute engine's own data registers (rows to and from the array): data moves.
    "toggles.control": ("cycles", "instructions", "spad_reads", "acc_reads", "acc_writes"),
    **{k: ("array_macs", "array_weight_rows") for k in MAC_KEYS},
}


def _sram_features(memory: str, kind: str) -> tuple[str, ...]:
    if memory.startswith("datapath.spad."):
        return ("spad_reads",) if kind == "reads" else ("spad_writes",)
    if memory.startswith("datapath.acc."):
        return ("acc_reads",) if kind == "reads" else ("acc_writes",)
    # The DMA engines' internal queues move one entry per DRAM beat.
    if memory.startswith("datapath.load_engine."):
        return ("dram_read_beats",)
    if memory.startswith("datapath.store_engine."):
        return ("dram_write_beats",)
    # Instruction queues and memory: per instruction.
    return ("instructions",)


def features(cycle_activity: dict, counters: dict) -> dict:
    """The cycle model's counts by name (activity and counters together)."""
    out = {k: float(v) for k, v in cycle_activity.items()}
    for k in ("cycles", "instructions", "dram_read_beats", "dram_write_beats", "load_busy", "compute_busy",
              "store_busy"):
        out[k] = float(counters.get(k, 0))
    return out


def quantities(rtl_activity: dict) -> dict:
    """The RTL activity flattened: ``toggles.<group>``, the MAC keys, ``sram.<memory>.reads|writes``."""
    out = {f"toggles.{g}": float(rtl_activity["toggles"][g]) for g in GROUPS}
    out.update({k: float(rtl_activity.get(k, 0)) for k in MAC_KEYS})
    for mem, m in rtl_activity["sram"].items():
        out[f"sram.{mem}.reads"] = float(m["reads"])
        out[f"sram.{mem}.writes"] = float(m["writes"])
    return out


def _columns(name: str) -> tuple[str, ...]:
    if name.startswith("sram."):
        mem, kind = name[5:].rsplit(".", 1)
        return _sram_features(mem, kind)
    return FEATURES_OF[name]


def fit_toggle_table(samples: list[tuple[dict, dict, dict]], config, source: str = "") -> dict:
    """Fit the per-access averages from RTL power runs.

    Parameters
    ----------
    samples : list of (cycle_activity, counters, rtl_activity)
        One per run: the cycle model's activity and counters, and the RTL's activity record.
    config : HwConfig
    source : str
        How the runs were made (stored in the table).

    Returns
    -------
    dict
        The table: ``config``, ``config_hash``, ``source``, ``bits`` ({group: register
        bits}), ``sram`` ({memory: {width, depth}}) and ``per_access`` ({quantity:
        {feature: mean count per unit}}).

    Raises
    ------
    ValueError
        No samples.
    """
    if not samples:
        raise ValueError("fit_toggle_table: no RTL runs to fit")
    feats = [features(a, c) for a, c, _ in samples]
    quants = [quantities(r) for _, _, r in samples]
    per_access = {}
    for name in sorted(quants[0]):
        cols = _columns(name)
        y = np.array([q[name] for q in quants])
        x = np.array([[f.get(c, 0.0) for c in cols] for f in feats])
        # Relative errors, so that the big runs do not decide alone.
        w = 1.0 / np.maximum(y, 1.0)
        beta = nonnegative_lstsq(x * w[:, None], y * w)
        per_access[name] = {c: float(f"{b:.6g}") + 0.0 for c, b in zip(cols, beta)}
    last = samples[0][2]
    return {"config": config.name, "config_hash": config.hash, "source": source,
            "bits": {g: int(last["bits"][g]) for g in GROUPS},
            "sram": {m: {"width": int(v["width"]), "depth": int(v["depth"])} for m, v in last["sram"].items()},
            "per_access": per_access}


def estimate_activity(cycle_activity: dict, counters: dict, table: dict) -> dict:
    """An RTL-shaped activity record (:func:`npuforge.cosim.toggles.parse_activity_line`) from counts."""
    f = features(cycle_activity, counters)

    def est(name):
        return int(round(sum(coef * f.get(col, 0.0) for col, coef in table["per_access"].get(name, {}).items())))

    act = {"cycles": int(counters.get("cycles", 0)), "toggles": {g: est(f"toggles.{g}") for g in GROUPS},
           "bits": dict(table["bits"])}
    act.update({k: est(k) for k in MAC_KEYS})
    act["sram"] = {m: {"reads": est(f"sram.{m}.reads"), "writes": est(f"sram.{m}.writes"), **geo}
                   for m, geo in table["sram"].items()}
    return act


def estimate_energy(cycle_activity: dict, counters: dict, config, table: dict | None = None, model=None) -> dict:
    """The RTL's energy report keys, estimated from a cycle-model run.

    Parameters
    ----------
    cycle_activity : dict
        :attr:`CycleResult.activity`.
    counters : dict
        :attr:`CycleResult.counters`.
    config : HwConfig
    table : dict, optional
        Default: :func:`load_toggle_table` for ``config``.
    model : EnergyModel, optional
        Default: :func:`npuforge.cosim.energy.load_energy_model`.

    Returns
    -------
    dict
        :func:`npuforge.cosim.energy.energy_report` keys, with ``activity`` the estimate,
        plus ``energy_fidelity`` (``"cycle"``) and ``energy_table`` (the table's file or config).

    Raises
    ------
    FileNotFoundError
        No toggle table for this config (the message says how to make one).
    """
    from ...cosim.energy import energy_report
    table = table if table is not None else load_toggle_table(config)
    report = energy_report(estimate_activity(cycle_activity, counters, table), counters, config, model)
    report["energy_fidelity"] = "cycle"
    report["energy_table"] = table.get("path", table["config"])
    return report


def table_path(config) -> Path:
    """``configs/energy/cycle-<config name>.yaml``."""
    return _ENERGY_DIR / f"cycle-{config.name}.yaml"


def load_toggle_table(config) -> dict:
    """The toggle table of ``config``.

    Raises
    ------
    FileNotFoundError
        None for this config name (the message names the command that writes one).
    ValueError
        The table was fitted for a different design point (config hash).
    """
    path = table_path(config)
    if not path.is_file():
        raise FileNotFoundError(f"no cycle-model toggle table {path}; write one with "
                                f"'npuforge power model-error --configs {config.name} --write'")
    # Parsed once per file version: a search loop estimates thousands of runs.
    key = (str(path), path.stat().st_mtime_ns)
    if key not in _CACHE:
        _CACHE[key] = yaml.safe_load(path.read_text())
    table = dict(_CACHE[key])
    if table.get("config_hash") != config.hash:
        raise ValueError(f"{path}: fitted for config hash {table.get('config_hash')}, not {config.hash} "
                         f"({config.name} changed); rerun 'npuforge power model-error --configs {config.name} --write'")
    table["path"] = str(path.relative_to(_ENERGY_DIR.parents[1])) if path.is_relative_to(_ENERGY_DIR.parents[1]) \
        else str(path)
    return table


def write_toggle_table(table: dict, path=None) -> Path:
    """Write ``table`` as YAML (default :func:`table_path`), with a header saying how to regenerate it."""
    path = Path(path) if path is not None else _ENERGY_DIR / f"cycle-{table['config']}.yaml"
    header = (f"# Cycle-model toggle table for {table['config']}: RTL activity per unit of cycle-model work.\n"
              f"# Generated by: npuforge power model-error --configs {table['config']} --write\n"
              f"# (fitted by non-negative least squares over the RTL power runs named in 'source').\n")
    body = {k: v for k, v in table.items() if k != "path"}
    path.write_text(header + yaml.safe_dump(body, sort_keys=False, width=110))
    return path
