"""Draw a run's energy breakdown per unit (``npuforge report plot``)."""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["plot_energy_report", "energy_lines"]


def energy_lines(report: dict) -> list[str]:
    """Human lines for a report's energy keys (empty when the run counted no activity)."""
    if report.get("energy_pj") is None or "energy_breakdown_pj" not in report:
        return []
    total = report["energy_pj"]
    macs = report.get("macs") or 0
    per_mac = f", {total / macs:.3g} pJ/MAC" if macs else ""
    model = report.get("energy_model", {})
    how = ", cycle-model estimate" if report.get("energy_fidelity") == "cycle" else ""
    lines = [f"  energy: {total / 1e6:.4g} uJ ({model.get('node', '?')}, scale {model.get('scale', '?')}{how}){per_mac}; "
             f"power {report['power_mw']:.4g} mW at {report.get('clock_mhz', '?')} MHz"]
    parts = sorted(report["energy_breakdown_pj"].items(), key=lambda kv: -kv[1])
    lines.append("  breakdown: " + ", ".join(f"{u} {v / total:.1%}" for u, v in parts if total > 0))
    return lines


def plot_energy_report(report_path, out_path) -> Path:
    """Write a PNG bar chart of ``energy_breakdown_pj`` from a ``report.json``.

    Parameters
    ----------
    report_path : path
        A report written by :func:`npuforge.run.run_bundle` with energy (``--power``).
    out_path : path
        The PNG to write.

    Returns
    -------
    Path

    Raises
    ------
    ValueError
        The report holds no energy breakdown (the message says how to get one).
    """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    report_path, out_path = Path(report_path), Path(out_path)
    report = json.loads(report_path.read_text())
    detail = report.get("energy_detail_pj")
    if not detail:
        raise ValueError(f"{report_path}: no energy_breakdown_pj; run the bundle with "
                         f"'npuforge run BUNDLE --fidelity rtl --power' (or make cosim POWER=1)")
    units = sorted(detail, key=lambda u: -detail[u]["total"])
    parts = ("toggles", "sram", "leakage")
    labels = {"toggles": "switching (registers, MAC operands; DRAM bytes)", "sram": "SRAM accesses",
              "leakage": "leakage"}
    fig, ax = plt.subplots(figsize=(8, 4.5))
    left = [0.0] * len(units)
    for part in parts:
        vals = [detail[u][part] / 1e3 for u in units]
        ax.barh(units, vals, left=left, label=labels[part])
        left = [a + b for a, b in zip(left, vals)]
    ax.invert_yaxis()
    ax.set_xlabel("energy (nJ)")
    total = report["energy_pj"]
    ax.set_title(f"{report.get('kernel', '?')} on {report.get('config', '?')} [{report.get('fidelity', '?')}]: "
                 f"{total / 1e6:.3g} uJ, {report.get('power_mw', 0):.3g} mW at {report.get('clock_mhz', '?')} MHz",
                 fontsize=10)
    for i, u in enumerate(units):
        ax.text(left[i], i, f" {detail[u]['total'] / total:.1%}" if total else "", va="center", fontsize=8)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_path, dpi=110)
    plt.close(fig)
    return out_path
