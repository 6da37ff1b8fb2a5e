"""The host driver against the simulated SoC (Verilator, cocotb driving the UART pins).

One simulation runs every call in a row (the build is shared and takes about a minute the
first time): a matmul bundle through ``run_bundle(..., "fpga")``, then the protocol's error
paths. The icebreaker-4x4 config is used because it is the board point with the fewest
gates to simulate.
"""

import json
from pathlib import Path

import numpy as np
import pytest

from npuforge.compiler.bundle import make_bundle
from npuforge.config import load_config
from npuforge.cosim.soc_sim import run_bundle_soc_sim, run_soc_sim

pytestmark = pytest.mark.rtl

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "icebreaker-4x4.yaml"


@pytest.fixture(scope="module")
def sim_results(tmp_path_factory):
    cfg = load_config(CONFIG)
    root = tmp_path_factory.mktemp("soc")
    matmul = make_bundle("matmul", {"m": 8, "k": 12, "n": 8}, cfg, 3, root / "matmul")
    other = make_bundle("matmul", {"m": 4, "k": 4, "n": 4}, cfg.replace(name="other-point"), 0, root / "other")
    calls = [
        {"func": "npuforge.cosim.soc_sim:call_run_bundle", "kwargs": {"bundle_dir": str(matmul)}},
        {"func": "npuforge.cosim.soc_scenarios:corrupted_write", "kwargs": {"bundle_dir": str(matmul)}},
        {"func": "npuforge.cosim.soc_scenarios:wrong_hash", "kwargs": {"bundle_dir": str(matmul)}},
        {"func": "npuforge.cosim.soc_scenarios:truncated_frame", "kwargs": {"bundle_dir": str(matmul)}},
        {"func": "npuforge.cosim.soc_scenarios:reply_timeout", "kwargs": {}},
        {"func": "npuforge.cosim.soc_scenarios:driver_errors", "kwargs": {"bundle_dir": str(matmul)}},
        {"func": "npuforge.cosim.soc_sim:call_run_bundle", "kwargs": {"bundle_dir": str(other)}},
        # After all the faults, a clean run still works and is bit-exact again.
        {"func": "npuforge.cosim.soc_sim:call_run_bundle", "kwargs": {"bundle_dir": str(matmul)}},
    ]
    results = run_soc_sim(cfg, calls, quiet=True)
    return {"matmul": matmul, "results": results}


def _value(result):
    assert result["ok"], result.get("traceback") or result
    return result["value"]


def _not_started(before, after):
    """A START clears the counters and raises busy; a refused one leaves both as they were."""
    assert not after["busy"]
    assert (after["cycles"], after["instructions"]) == (before["cycles"], before["instructions"])
    assert after["cycles"] > 0          # the previous good run's figures are still there


def test_matmul_bundle_runs_bit_exactly_through_the_host_driver(sim_results):
    report = _value(sim_results["results"][0])
    assert report["fidelity"] == "fpga"
    assert report["passed"], report
    assert report["mismatch"] is None and report["error"] is None
    assert report["cycles"] == report["counters"]["cycles"] > 0
    # The driver's report is the bundle's report.json, as for every fidelity.
    on_disk = json.loads((sim_results["matmul"] / "report.json").read_text())
    assert on_disk["fidelity"] == "fpga" and on_disk["cycles"] == report["cycles"]
    assert sim_results["results"][0]["framing_errors"] == 0


def test_corrupted_write_is_refused_and_the_npu_never_starts(sim_results):
    r = _value(sim_results["results"][1])
    assert r["write"] == "BAD_CHECKSUM"
    assert r["after_write"]["tainted"] and r["after_write"]["session_bytes"] == 0
    assert r["start"] == "NOT_LOADED"
    _not_started(r["before"], r["after_start"])


def test_wrong_hash_or_count_never_starts(sim_results):
    r = _value(sim_results["results"][2])
    assert r["start_other_hash"] == "BAD_HASH"
    assert r["start_wrong_count"] == "NOT_LOADED"
    _not_started(r["before"], r["after"])
    _not_started(r["before"], r["after_wrong_count"])


def test_truncated_frame_is_dropped_and_taints_the_session(sim_results):
    r = _value(sim_results["results"][3])
    assert r["reply_bytes"] == 0
    assert r["after"]["tainted"]
    assert r["start"] == "NOT_LOADED"
    _not_started(r["before"], r["after_start"])


def test_timeout_and_bad_address_give_clear_messages(sim_results):
    r = _value(sim_results["results"][4])
    assert r["raised"] == "LinkTimeout"
    assert "no reply to WRITE DRAM 0x0+16" in r["message"] and "baud" in r["message"]
    r = _value(sim_results["results"][5])
    assert r["raised"] == "ProtocolError" and r["status"] == "BAD_ADDRESS"
    assert "READ DRAM" in r["message"]


def test_driver_refuses_a_bundle_for_another_config(sim_results):
    r = sim_results["results"][6]
    assert not r["ok"] and r["error_type"] == "ConfigMismatch"
    assert "other-point" in r["message"]


def test_clean_run_after_faults_is_still_bit_exact(sim_results):
    first, last = _value(sim_results["results"][0]), _value(sim_results["results"][7])
    assert last["passed"]
    assert last["counters"] == first["counters"]


def test_run_bundle_soc_sim_matches_the_reference(tmp_path):
    cfg = load_config(CONFIG)
    bundle = make_bundle("matmul", {"m": 5, "k": 7, "n": 6}, cfg, 11, tmp_path / "b")
    report = run_bundle_soc_sim(bundle, quiet=True)
    assert report["passed"] and report["fidelity"] == "fpga"
    assert np.isfinite(report["utilization"])


@pytest.mark.slow
@pytest.mark.parametrize("name", ["ulx3s-8x8", "icebreaker-4x4"])
def test_board_points_run_through_the_simulated_soc_with_rtl_cycles(tmp_path, name):
    """A board's design point through the simulated SoC: bit-exact, and the same cycle count and
    counters as the RTL co-simulation of the plain core (the FPGA memories and on-chip DRAM keep timing)."""
    from npuforge.run import run_bundle
    cfg = load_config(CONFIG.with_name(f"{name}.yaml"))
    bundle = make_bundle("matmul", {"m": 16, "k": 24, "n": 16}, cfg, 5, tmp_path / "b")
    fpga = run_bundle_soc_sim(bundle, quiet=True)
    rtl = run_bundle(bundle, "rtl", power=False)
    assert fpga["passed"] and rtl["passed"]
    assert fpga["counters"] == rtl["counters"]
