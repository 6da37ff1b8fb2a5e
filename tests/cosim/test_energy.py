"""The energy model: coefficient file, arithmetic, and sanity on real RTL runs (4x4)."""

import json

import pytest
import yaml

from npuforge.config import load_config
from npuforge.cosim.energy import DEFAULT_ENERGY_FILE, UNITS, energy_report, load_energy_model
from npuforge.cosim.toggles import GROUPS

# Documented plausible ranges at 45 nm (configs/energy/default.yaml): an int8 multiply plus a
# 32-bit add is 0.3 pJ (Horowitz, ISSCC 2014); with the PE registers the array spends
# 0.1-1.5 pJ per MAC; with the on-chip SRAM traffic of a small array, 0.3-30 pJ per MAC.
ARRAY_PJ_PER_MAC = (0.1, 1.5)
ONCHIP_PJ_PER_MAC = (0.3, 30.0)


def _activity(scale=1):
    return {"cycles": 100 * scale, "toggles": {g: 1000 * scale for g in GROUPS},
            "bits": {g: 1024 for g in GROUPS}, "mac_operand_toggles": 400 * scale,
            "mac_pp_toggles": 700 * scale, "mac_psum_toggles": 300 * scale,
            "sram": {"datapath.spad.bank0": {"reads": 10 * scale, "writes": 5 * scale, "width": 64, "depth": 1024},
                     "datapath.acc.mem": {"reads": 3 * scale, "writes": 3 * scale, "width": 128, "depth": 512},
                     "load_queue.storage": {"reads": 0, "writes": 2 * scale, "width": 64, "depth": 16}}}


def test_default_file_loads_and_every_coefficient_is_sourced():
    m = load_energy_model()
    assert m["node"] == "45nm" and m["scale"] == 1.0
    text = DEFAULT_ENERGY_FILE.read_text()
    assert "Horowitz" in text and "ISSCC 2014" in text
    # the published anchor: 64-bit read of an 8 KiB SRAM is 10 pJ; 32 KiB is 20 pJ
    assert m.sram_access_pj(64, 1024) == pytest.approx(10.0)
    assert m.sram_access_pj(64, 4096) == pytest.approx(20.0)


def test_bigger_group_costs_more_per_toggle():
    m = load_energy_model()
    assert m.toggle_pj("array", 4096) == pytest.approx(2 * m.toggle_pj("array", 1024))
    assert m.toggle_pj("array", 1024) == pytest.approx(m["toggle_pj"]["array"])


def test_bad_file_names_the_key(tmp_path):
    bad = tmp_path / "e.yaml"
    bad.write_text(DEFAULT_ENERGY_FILE.read_text().replace("dram_pj_per_byte: 162.5", "dram_pj_per_byte: -1"))
    with pytest.raises(ValueError, match=r"e\.yaml: mac_calibration: calibration-4x4\.yaml .* does not exist"):
        load_energy_model(bad)
    cal = DEFAULT_ENERGY_FILE.with_name("calibration-4x4.yaml")
    (tmp_path / cal.name).write_text(cal.read_text())
    with pytest.raises(ValueError, match=r"e\.yaml: dram_pj_per_byte must be a number >= 0"):
        load_energy_model(bad)
    bad.write_text(DEFAULT_ENERGY_FILE.read_text() + "mac_pp_toggle_pj: 0.01\n")
    with pytest.raises(ValueError, match=r"e\.yaml: mac_pp_toggle_pj is set here and by mac_calibration"):
        load_energy_model(bad)
    bad.write_text("node: 45nm\n")
    with pytest.raises(ValueError, match="missing key 'scale'"):
        load_energy_model(bad)


def test_report_arithmetic_by_hand():
    cfg = load_config("4x4")
    m = load_energy_model()
    counters = {"dram_read_beats": 10, "dram_write_beats": 2, "cycles": 100}
    rep = energy_report(_activity(), counters, cfg, m)
    assert set(rep["energy_breakdown_pj"]) == set(UNITS)
    assert rep["energy_breakdown_pj"]["dram"] == pytest.approx(12 * cfg.dram_bytes_per_cycle * 162.5)
    mac = 400 * m["mac_operand_toggle_pj"] + 700 * m["mac_pp_toggle_pj"] + 300 * m["mac_psum_toggle_pj"]
    assert mac > 0
    array = 1000 * 0.008 + mac + 100 * 0.003 * cfg.pes
    assert rep["energy_breakdown_pj"]["array"] == pytest.approx(array, abs=1e-3)
    spad = 1000 * 0.008 + 15 * 10.0 + 100 * 0.002 * cfg.spad_kib
    assert rep["energy_breakdown_pj"]["scratchpad"] == pytest.approx(spad, rel=1e-6)
    assert rep["energy_pj"] == pytest.approx(sum(rep["energy_breakdown_pj"].values()), rel=1e-6)
    # mW = pJ per cycle * MHz / 1000
    assert rep["power_mw"] == pytest.approx(rep["energy_pj"] / 100 * cfg.clock_mhz / 1000, rel=1e-4)
    twice = energy_report(_activity(2), {k: 2 * v for k, v in counters.items()}, cfg, m)
    assert twice["energy_pj"] == pytest.approx(2 * rep["energy_pj"], rel=1e-4)


# ---- on the RTL ---------------------------------------------------------------------------------

def _run(tmp_path, name, shape, **options):
    from npuforge.compiler.bundle import make_bundle
    from npuforge.run import run_bundle
    cfg = load_config("4x4")
    bundle = make_bundle("matmul", shape, cfg, 1, tmp_path / name, **options)
    report = run_bundle(bundle, fidelity="rtl", power=True)
    assert report["passed"], report
    on_disk = json.loads((bundle / "report.json").read_text())
    assert on_disk["energy_pj"] == report["energy_pj"] and on_disk["power_mw"] > 0
    return report


@pytest.mark.rtl
def test_energy_per_mac_and_doubling_the_work(tmp_path):
    one = _run(tmp_path, "m32", {"m": 32, "k": 32, "n": 32})
    two = _run(tmp_path, "m64", {"m": 64, "k": 32, "n": 32})
    b = one["energy_breakdown_pj"]
    array_per_mac = b["array"] / one["macs"]
    onchip_per_mac = (one["energy_pj"] - b["dram"]) / one["macs"]
    assert ARRAY_PJ_PER_MAC[0] <= array_per_mac <= ARRAY_PJ_PER_MAC[1], array_per_mac
    assert ONCHIP_PJ_PER_MAC[0] <= onchip_per_mac <= ONCHIP_PJ_PER_MAC[1], onchip_per_mac
    ratio = two["energy_dynamic_pj"] / one["energy_dynamic_pj"]
    assert 1.7 <= ratio <= 2.3, ratio
    assert two["activity"]["mac_operand_toggles"] > 1.7 * one["activity"]["mac_operand_toggles"]


@pytest.mark.rtl
def test_resident_weights_cost_less_dram_energy(tmp_path):
    from npuforge.compiler.kernels.matmul import MatmulTiling
    shape = {"m": 64, "k": 32, "n": 32}
    resident = _run(tmp_path, "res", shape, tiling=MatmulTiling(tile_m=64, tile_n=32))
    refetch = _run(tmp_path, "ref", shape, tiling=MatmulTiling(tile_m=4, tile_n=32))
    assert refetch["counters"]["dram_read_bytes"] > resident["counters"]["dram_read_bytes"]
    assert resident["energy_breakdown_pj"]["dram"] < refetch["energy_breakdown_pj"]["dram"]
    assert resident["energy_pj"] < refetch["energy_pj"]


def test_calibration_file_and_the_environment_switch(monkeypatch):
    from npuforge.cosim.calibrate import default_output
    cal = default_output("4x4")
    assert cal.is_file(), "configs/energy/calibration-4x4.yaml: run 'npuforge power calibrate --config 4x4'"
    default = load_energy_model()
    # the default file takes its MAC coefficients from the calibration (mac_calibration)
    fitted = yaml.safe_load(cal.read_text())
    for key in ("mac_operand_toggle_pj", "mac_pp_toggle_pj", "mac_psum_toggle_pj"):
        assert default[key] == fitted[key]
    assert default["mac_calibration"] == str(cal.resolve())
    monkeypatch.setenv("NPUFORGE_ENERGY_FILE", str(cal))
    m = load_energy_model()
    assert m["mac_pp_toggle_pj"] > 0 and m["calibration"]["seed"] == 2026
    # the fit beats register flips with one coefficient on every stored workload's worst case
    errs = m["calibration"]["workloads"].values()
    assert max(abs(w["error"]["fit"]) for w in errs) < max(abs(w["error"]["register_only_random"]) for w in errs)
    cfg = load_config("4x4")
    act = dict(_activity(), mac_pp_toggles=1000, mac_psum_toggles=500)
    with_pp = energy_report(act, {}, cfg)
    base = energy_report(dict(act, mac_pp_toggles=0, mac_psum_toggles=0), {}, cfg)
    extra = 1000 * m["mac_pp_toggle_pj"] + 500 * m["mac_psum_toggle_pj"]
    assert with_pp["energy_breakdown_pj"]["array"] - base["energy_breakdown_pj"]["array"] == pytest.approx(extra, rel=1e-3)
    assert with_pp["energy_model"]["file"] == str(cal)
    monkeypatch.setenv("NPUFORGE_ENERGY_FILE", "/nonexistent/e.yaml")
    with pytest.raises(ValueError, match="e.yaml does not exist"):
        load_energy_model()
