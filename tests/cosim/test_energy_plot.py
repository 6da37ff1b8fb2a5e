"""``npuforge report plot``: the energy breakdown as a PNG, and the printed energy lines."""

import json

import pytest

from npuforge.cli import main
from npuforge.config import load_config
from npuforge.cosim.energy import energy_report
from npuforge.cosim.energy_plot import energy_lines
from npuforge.cosim.toggles import GROUPS


def _report():
    act = {"cycles": 1000, "toggles": {g: 5000 for g in GROUPS}, "bits": {g: 2048 for g in GROUPS},
           "mac_operand_toggles": 3000,
           "sram": {"datapath.spad.bank0": {"reads": 100, "writes": 50, "width": 64, "depth": 4096}}}
    rep = {"kernel": "matmul", "config": "4x4", "fidelity": "rtl", "macs": 4096}
    rep.update(energy_report(act, {"dram_read_beats": 64, "dram_write_beats": 16}, load_config("4x4")))
    return rep


def test_plot_writes_a_png(tmp_path, capsys):
    path = tmp_path / "report.json"
    path.write_text(json.dumps(_report()))
    assert main(["report", "plot", str(path), "-o", str(tmp_path / "e.png")]) == 0
    assert (tmp_path / "e.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "wrote" in capsys.readouterr().out


def test_plot_without_energy_says_how_to_get_it(tmp_path, capsys):
    path = tmp_path / "report.json"
    path.write_text(json.dumps({"kernel": "matmul", "energy_pj": None}))
    assert main(["report", "plot", str(path), "-o", str(tmp_path / "e.png")]) == 2
    assert "--power" in capsys.readouterr().err


def test_energy_lines():
    rep = _report()
    lines = energy_lines(rep)
    assert lines[0].startswith("  energy: ") and "pJ/MAC" in lines[0] and "mW at 200" in lines[0]
    assert lines[1].startswith("  breakdown: dram ")
    assert energy_lines({"energy_pj": None}) == []
    assert rep["power_mw"] == pytest.approx(rep["energy_pj"] / 1000 * 200 / 1000, rel=1e-3)
