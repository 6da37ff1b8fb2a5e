"""The cycle model's energy estimate: the toggle table, its fit, the report, and its error against the RTL."""

import numpy as np
import pytest

from npuforge.compiler.cycle_model.energy import (estimate_activity, estimate_energy, fit_toggle_table,
                                                  load_toggle_table, table_path)
from npuforge.config import load_config
from npuforge.cosim.energy import UNITS, energy_report
from npuforge.cosim.toggles import GROUPS, MAC_KEYS

_SRAM = {"datapath.spad.bank0": (32, 4096), "datapath.acc.mem": (128, 1024), "load_queue.storage": (169, 16)}


def _sample(rng):
    """A cycle-model run and the RTL activity that a known table would give for it."""
    act = {k: int(rng.integers(10, 1000)) for k in ("spad_reads", "spad_writes", "acc_reads", "acc_writes",
                                                     "array_weight_rows", "requant_rows", "vadd_rows",
                                                     "vmax_rows", "vrelu_rows", "vquant_rows")}
    act["array_macs"] = int(rng.integers(1_000, 100_000))
    counters = {k: int(rng.integers(100, 5000)) for k in ("cycles", "instructions", "dram_read_beats",
                                                          "dram_write_beats", "load_busy", "compute_busy",
                                                          "store_busy")}
    toggles = {"array": 20 * act["array_macs"] + 900 * act["array_weight_rows"], "scratchpad": act["spad_reads"],
               "accumulator": 0, "dma": 90 * counters["dram_read_beats"] + 30 * counters["store_busy"],
               "vector": 50 * act["vadd_rows"] + 80 * act["vquant_rows"], "control": 27 * counters["instructions"] + 120 * act["spad_reads"]}
    rtl = {"cycles": counters["cycles"], "toggles": toggles, "bits": {g: 1000 for g in GROUPS},
           "mac_operand_toggles": 3 * act["array_macs"], "mac_psum_toggles": 11 * act["array_macs"],
           "mac_pp_toggles": 12 * act["array_macs"],
           "sram": {"datapath.spad.bank0": {"reads": act["spad_reads"] // 4 * 4 // 4, "writes": 0, "width": 32,
                                            "depth": 4096},
                    "datapath.acc.mem": {"reads": act["acc_reads"], "writes": act["acc_writes"], "width": 128,
                                         "depth": 1024},
                    "load_queue.storage": {"reads": 0, "writes": counters["instructions"] // 2, "width": 169,
                                           "depth": 16}}}
    return act, counters, rtl


def test_fit_recovers_a_known_table_and_estimates_the_activity():
    cfg = load_config("4x4")
    rng = np.random.default_rng(11)
    samples = [_sample(rng) for _ in range(12)]
    table = fit_toggle_table(samples, cfg, "synthetic")
    pa = table["per_access"]
    assert pa["toggles.array"]["array_macs"] == pytest.approx(20, rel=1e-4)
    assert pa["toggles.array"]["array_weight_rows"] == pytest.approx(900, rel=1e-4)
    assert pa["toggles.control"]["spad_reads"] == pytest.approx(120, rel=1e-4)
    assert pa["mac_pp_toggles"]["array_macs"] == pytest.approx(12, rel=1e-4)
    assert pa["sram.datapath.acc.mem.writes"] == {"acc_writes": 1.0}
    assert table["sram"]["datapath.acc.mem"] == {"width": 128, "depth": 1024}
    act, counters, rtl = _sample(np.random.default_rng(99))
    est = estimate_activity(act, counters, table)
    for g in ("array", "scratchpad", "dma", "vector"):
        assert est["toggles"][g] == pytest.approx(rtl["toggles"][g], rel=1e-3, abs=2), g
    for k in MAC_KEYS:
        assert est[k] == pytest.approx(rtl[k], rel=1e-3)
    assert est["sram"]["datapath.acc.mem"]["reads"] == rtl["sram"]["datapath.acc.mem"]["reads"]
    # the estimate goes through the RTL's energy arithmetic: same keys, near the same numbers
    rep = estimate_energy(act, counters, cfg, table)
    truth = energy_report(rtl, counters, cfg)
    assert rep["energy_fidelity"] == "cycle" and set(rep["energy_breakdown_pj"]) == set(UNITS)
    assert rep["energy_pj"] == pytest.approx(truth["energy_pj"], rel=0.02)


def test_missing_or_stale_table_says_how_to_make_one(tmp_path, monkeypatch):
    import npuforge.compiler.cycle_model.energy as cycle_energy
    cfg = load_config("4x4")
    with pytest.raises(ValueError, match="no RTL runs"):
        fit_toggle_table([], cfg)
    monkeypatch.setattr(cycle_energy, "_ENERGY_DIR", tmp_path)
    with pytest.raises(FileNotFoundError, match="npuforge power model-error --configs 4x4 --write"):
        load_toggle_table(cfg)
    table = fit_toggle_table([_sample(np.random.default_rng(s)) for s in range(8)], cfg, "synthetic")
    cycle_energy.write_toggle_table(dict(table, config_hash="0" * 16), table_path(cfg))
    with pytest.raises(ValueError, match="fitted for config hash 0{16}, not .*rerun 'npuforge power model-error"):
        load_toggle_table(cfg)


@pytest.mark.parametrize("name", ["4x4", "8x8"])
def test_shipped_tables_match_their_configs(name):
    cfg = load_config(name)
    table = load_toggle_table(cfg)
    assert table["config_hash"] == cfg.hash
    assert "npuforge power model-error" in table_path(cfg).read_text().splitlines()[1]


def test_cycle_fidelity_report_carries_estimated_energy(tmp_path):
    from npuforge.compiler.bundle import make_bundle
    from npuforge.run import run_bundle, summary_line
    cfg = load_config("4x4")
    bundle = make_bundle("matmul", {"m": 32, "k": 32, "n": 32}, cfg, 1, tmp_path / "b")
    rep = run_bundle(bundle, fidelity="cycle")
    assert rep["passed"] and rep["energy_fidelity"] == "cycle"
    assert set(rep["energy_breakdown_pj"]) == set(UNITS)
    assert rep["energy_pj"] == pytest.approx(sum(rep["energy_breakdown_pj"].values()), rel=1e-6)
    assert rep["activity"]["array_macs"] == 32 * 32 * 32          # the cycle model's counts stay
    assert rep["activity_estimate"]["mac_pp_toggles"] > 0
    assert "(est.)" in summary_line(rep)
    # DRAM energy is exact: bytes moved are counted by the cycle model
    assert rep["energy_breakdown_pj"]["dram"] > 0.5 * rep["energy_pj"]
    off = run_bundle(bundle, fidelity="cycle", power=False)
    assert "energy_pj" not in off


# Error of the cycle model's total (and on-chip) energy against the RTL on held-out cases, 4x4
# (measured 0.2% / 2.1% with the shipped cases; the bounds leave room for other data).
TOTAL_BOUND, ONCHIP_BOUND = 0.02, 0.10


@pytest.mark.rtl
def test_cycle_energy_error_against_rtl_is_bounded():
    from npuforge.cosim.energy_model_error import format_model_error, model_error
    res = model_error(load_config("4x4"), held_out=("matmul-edge", "relu-odd"),
                      train_extra=("matmul-single-buffer", "relu-64", "add-64"))
    lines = format_model_error(res)
    held = [c for c in res["cases"] if not c["train"]]
    assert [c["name"] for c in held] == ["matmul-edge", "relu-odd"]
    for c in res["cases"]:
        assert abs(c["error"]["total"]) <= TOTAL_BOUND, lines
        assert abs(c["error"]["onchip"]) <= ONCHIP_BOUND, lines
        assert c["error"]["dram"] == pytest.approx(0.0, abs=1e-9)
