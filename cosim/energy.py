"""Energy and power from switching activity, with coefficients from a YAML file.

The activity of a run (:mod:`npuforge.cosim.toggles`: toggles per group, multiplier
operand, partial-sum and partial-product flips, SRAM reads/writes per memory, ``busy``
cycles) and the core's counters (DRAM beats) are weighted by the coefficients of
``configs/energy/default.yaml`` (or another file of the same shape, such as the output of
``npuforge power calibrate``); every default there names its source.

Which file: ``load_energy_model(path)``; without a path, the file named by the environment
variable :data:`ENERGY_FILE_ENV` (``NPUFORGE_ENERGY_FILE``) when set, else the default file.
That is how a run (``npuforge run ... --power``) switches to a calibration file.

Units in the breakdown: ``array``, ``scratchpad``, ``accumulator``, ``dma``, ``vector``,
``control`` (each: register toggles + its SRAM accesses + its leakage) and ``dram``.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

import yaml

from .toggles import GROUPS, _group

__all__ = ["EnergyModel", "load_energy_model", "energy_breakdown_pj", "energy_report", "DEFAULT_ENERGY_FILE",
           "UNITS", "ENERGY_FILE_ENV", "MAC_COEFFICIENTS", "nonnegative_lstsq"]

DEFAULT_ENERGY_FILE = Path(__file__).resolve().parent.parent / "configs" / "energy" / "default.yaml"
ENERGY_FILE_ENV = "NPUFORGE_ENERGY_FILE"
# Activity count -> coefficient (pJ per flip) of the multiply-accumulate logic; the last two are
# optional in a file (0 when absent, which is the register-only model of older files).
MAC_COEFFICIENTS = {"mac_operand_toggles": "mac_operand_toggle_pj", "mac_psum_toggles": "mac_psum_toggle_pj",
                    "mac_pp_toggles": "mac_pp_toggle_pj"}
_OPTIONAL = ("mac_psum_toggle_pj", "mac_pp_toggle_pj")
UNITS = GROUPS + ("dram",)
_REQUIRED = ("node", "scale", "toggle_pj", "toggle_ref_bits", "toggle_size_exponent", "mac_operand_toggle_pj",
             "sram_read_pj_per_64b", "sram_ref_kib", "sram_size_exponent", "sram_write_factor", "dram_pj_per_byte",
             "leakage_pj_per_cycle")
_LEAK_KEYS = ("per_pe", "per_sram_kib", "dma", "vector", "control")


class EnergyModel(dict):
    """The coefficients of one energy file (a dict, validated by :func:`load_energy_model`)."""

    def toggle_pj(self, group: str, bits: int) -> float:
        """Energy of one flip in ``group`` when the group holds ``bits`` register bits."""
        size = max(bits, 1) / self["toggle_ref_bits"]
        return self["scale"] * self["toggle_pj"][group] * size ** self["toggle_size_exponent"]

    def sram_access_pj(self, width: int, depth: int, write: bool = False) -> float:
        """Energy of one access of a ``width`` x ``depth`` memory."""
        kib = width * depth / 8 / 1024
        e = self["sram_read_pj_per_64b"] * (kib / self["sram_ref_kib"]) ** self["sram_size_exponent"] * width / 64
        return self["scale"] * e * (self["sram_write_factor"] if write else 1.0)


def load_energy_model(path=None) -> EnergyModel:
    """Read and check an energy coefficient file.

    Parameters
    ----------
    path : path, optional
        YAML file; default: ``$NPUFORGE_ENERGY_FILE`` if set, else ``configs/energy/default.yaml``.

    Raises
    ------
    ValueError
        A key is missing or a coefficient is negative (the message names the file and key).
    """
    if path is None:
        path = os.environ.get(ENERGY_FILE_ENV) or DEFAULT_ENERGY_FILE
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"energy coefficient file {path} does not exist")
    raw = _read_yaml(path)
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a mapping of energy coefficients")
    if "mac_calibration" in raw:
        _read_mac_calibration(raw, path)
    for key in _REQUIRED:
        if key not in raw:
            raise ValueError(f"{path}: missing key '{key}'")
    for group in GROUPS:
        if group not in raw["toggle_pj"]:
            raise ValueError(f"{path}: toggle_pj has no entry for group '{group}'")
    for key in _LEAK_KEYS:
        if key not in raw["leakage_pj_per_cycle"]:
            raise ValueError(f"{path}: leakage_pj_per_cycle has no entry '{key}'")
    for key in _OPTIONAL:
        raw.setdefault(key, 0.0)
    flat = [("scale", raw["scale"]), ("mac_operand_toggle_pj", raw["mac_operand_toggle_pj"]),
            ("mac_psum_toggle_pj", raw["mac_psum_toggle_pj"]), ("mac_pp_toggle_pj", raw["mac_pp_toggle_pj"]),
            ("dram_pj_per_byte", raw["dram_pj_per_byte"]), ("sram_read_pj_per_64b", raw["sram_read_pj_per_64b"])]
    flat += [(f"toggle_pj.{k}", v) for k, v in raw["toggle_pj"].items()]
    flat += [(f"leakage_pj_per_cycle.{k}", v) for k, v in raw["leakage_pj_per_cycle"].items()]
    for key, value in flat:
        if not isinstance(value, (int, float)) or value < 0:
            raise ValueError(f"{path}: {key} must be a number >= 0, not {value!r}")
    model = EnergyModel(raw)
    model.path = str(path)
    return model


_PARSED: dict = {}


def _read_yaml(path: Path):
    """A YAML file's content, parsed once per version of the file (a fresh copy each call):
    the calibration file is long, and a cycle-fidelity run loads the model every time."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size)
    if key not in _PARSED:
        _PARSED[key] = yaml.safe_load(path.read_text())
    return copy.deepcopy(_PARSED[key])


def _read_mac_calibration(raw: dict, path: Path) -> None:
    """Take the MAC coefficients from the calibration file that ``mac_calibration`` names."""
    cal_path = (path.parent / str(raw["mac_calibration"])).resolve()
    if not cal_path.is_file():
        raise ValueError(f"{path}: mac_calibration: {raw['mac_calibration']} ({cal_path}) does not exist")
    cal = _read_yaml(cal_path)
    for key in MAC_COEFFICIENTS.values():
        if key in raw:
            raise ValueError(f"{path}: {key} is set here and by mac_calibration; keep one")
        if not isinstance(cal, dict) or key not in cal:
            raise ValueError(f"{cal_path}: missing key '{key}' (named by {path}: mac_calibration)")
        raw[key] = cal[key]
    raw["mac_calibration"] = str(cal_path)


def nonnegative_lstsq(x, y):
    """Least squares with non-negative coefficients (the energy fits): drop the most negative
    column and refit until none is negative. Small and deterministic (no scipy here); with the
    few columns of these fits the active set settles in a step or two.

    Parameters
    ----------
    x : numpy.ndarray
        (samples, columns).
    y : numpy.ndarray
        (samples,).

    Returns
    -------
    numpy.ndarray
        One coefficient per column, 0 for the dropped ones.
    """
    import numpy as np
    active = list(range(x.shape[1]))
    beta = np.zeros(x.shape[1])
    while active:
        sol, *_ = np.linalg.lstsq(x[:, active], y, rcond=None)
        if (sol >= 0).all():
            beta[active] = sol
            return beta
        active.pop(int(np.argmin(sol)))
    return beta


def energy_breakdown_pj(activity: dict, counters: dict, config, model: EnergyModel | None = None) -> dict:
    """Energy per unit (pJ) of one run.

    Parameters
    ----------
    activity : dict
        From :func:`npuforge.cosim.toggles.parse_activity_line`.
    counters : dict
        The core's counters (``dram_read_beats``, ``dram_write_beats``, ``cycles``).
    config : HwConfig
    model : EnergyModel, optional
        Default: :func:`load_energy_model`.

    Returns
    -------
    dict
        ``{unit: {"toggles", "sram", "leakage", "total"}}`` for every unit of :data:`UNITS`.
    """
    model = model or load_energy_model()
    out = {u: {"toggles": 0.0, "sram": 0.0, "leakage": 0.0} for u in UNITS}
    for g in GROUPS:
        out[g]["toggles"] = activity["toggles"][g] * model.toggle_pj(g, activity["bits"].get(g, 0))
    out["array"]["toggles"] += model["scale"] * sum(model[coef] * activity.get(key, 0)
                                                    for key, coef in MAC_COEFFICIENTS.items())
    for memory, m in activity["sram"].items():
        unit = _group(memory.rsplit(".", 1)[0] if "." in memory else "")
        out[unit]["sram"] += (m["reads"] * model.sram_access_pj(m["width"], m["depth"])
                              + m["writes"] * model.sram_access_pj(m["width"], m["depth"], write=True))
    beats = int(counters.get("dram_read_beats", 0)) + int(counters.get("dram_write_beats", 0))
    out["dram"]["toggles"] = model["scale"] * model["dram_pj_per_byte"] * beats * config.dram_bytes_per_cycle
    leak, cycles = model["leakage_pj_per_cycle"], activity["cycles"]
    per_cycle = {"array": leak["per_pe"] * config.pes, "scratchpad": leak["per_sram_kib"] * config.spad_kib,
                 "accumulator": leak["per_sram_kib"] * config.acc_kib, "dma": leak["dma"], "vector": leak["vector"],
                 "control": leak["control"]}
    for unit, e in per_cycle.items():
        out[unit]["leakage"] = model["scale"] * e * cycles
    for unit in out:
        out[unit]["total"] = sum(out[unit].values())
    return out


def energy_report(activity: dict, counters: dict, config, model: EnergyModel | None = None) -> dict:
    """The energy keys of a run's report.

    Returns
    -------
    dict
        ``energy_pj`` (total), ``energy_dynamic_pj``, ``energy_leakage_pj``, ``power_mw``
        (average at ``config.clock_mhz`` over the busy cycles), ``energy_breakdown_pj``
        ({unit: pJ}), ``energy_detail_pj`` (per unit: toggles / sram / leakage),
        ``energy_model`` (node and scale) and ``activity``.
    """
    model = model or load_energy_model()
    detail = energy_breakdown_pj(activity, counters, config, model)
    total = sum(d["total"] for d in detail.values())
    leakage = sum(d["leakage"] for d in detail.values())
    cycles = activity["cycles"]
    # pJ over (cycles / f): pJ * MHz / cycles = microwatts; / 1000 gives mW.
    power_mw = total * config.clock_mhz / cycles / 1000 if cycles else 0.0
    return {
        "energy_pj": round(total, 3),
        "energy_dynamic_pj": round(total - leakage, 3),
        "energy_leakage_pj": round(leakage, 3),
        "power_mw": round(power_mw, 4),
        "clock_mhz": config.clock_mhz,
        "energy_breakdown_pj": {u: round(d["total"], 3) for u, d in detail.items()},
        "energy_detail_pj": {u: {k: round(v, 3) for k, v in d.items()} for u, d in detail.items()},
        "energy_model": {"node": model["node"], "scale": model["scale"],
                         "file": getattr(model, "path", None)},
        "activity": activity,
    }
