"""npuforge.run: reports, bit-exact checks, mismatches, program errors and fidelities."""

import json
import time

import numpy as np
import pytest

from npuforge.compiler.bundle import make_bundle
from npuforge.config import load_config
from npuforge.run import FIDELITIES, REPORT_KEYS, run_bundle, summary_line

CFG = load_config("8x8")


@pytest.fixture
def bundle(tmp_path):
    return make_bundle("matmul", dict(m=24, k=10, n=17), CFG, 1, tmp_path / "mm")


def test_report_keys_and_values(bundle):
    report = run_bundle(bundle)
    assert list(report)[:len(REPORT_KEYS)] == list(REPORT_KEYS)
    assert REPORT_KEYS == ("kernel", "config", "config_hash", "fidelity", "passed", "cycles", "macs", "utilization",
                           "wall_s", "mismatch", "error", "counters")
    assert report["kernel"] == "matmul" and report["config"] == "8x8" and report["config_hash"] == CFG.hash
    assert report["fidelity"] == "reference" and report["passed"] is True
    assert report["cycles"] is None and report["utilization"] is None
    assert report["macs"] == 24 * 10 * 17 and report["wall_s"] > 0
    assert report["mismatch"] is None and report["error"] is None
    assert set(report["counters"]) == {"dispatched", "array_macs", "dram_read_bytes", "dram_write_bytes"}
    assert report["counters"]["dram_write_bytes"] == 24 * 17 * 4
    assert json.loads((bundle / "report.json").read_text()) == report


def test_mismatch_is_reported(bundle):
    with np.load(bundle / "expected.npz") as npz:
        c = npz["C"].copy()
    c[5, 3] += 1
    np.savez(bundle / "expected.npz", C=c)
    report = run_bundle(bundle)
    assert report["passed"] is False
    assert report["mismatch"] == {"tensor": "C", "index": [5, 3], "expected": int(c[5, 3]), "got": int(c[5, 3]) - 1}
    assert summary_line(report).startswith("FAIL matmul 24x10x17 on 8x8 [reference]")
    assert "mismatch=C[5, 3]" in summary_line(report)


def test_program_error_is_reported_with_its_line(bundle):
    """A compute instruction that waits for a token nobody gives: DEADLOCK at its index and line."""
    from npuforge.assembler.builder import ProgramBuilder
    b = ProgramBuilder(CFG)
    b.emit("seti", rd=1, imm=3)
    b.emit("matmul", acc=0, sp=0, rows=0, deps=["pop_prev"])
    b.emit("halt")
    (bundle / "program.bin").write_bytes(b.image().to_bytes())
    (bundle / "program.s").write_text(b.text("a deadlocking program"))
    report = run_bundle(bundle)
    assert report["passed"] is False
    err = report["error"]
    assert err["code"] == "DEADLOCK" and err["pc"] == 1
    assert err["line"] in (None, 3)         # 3 when the assembler maps indices to lines
    assert "error=DEADLOCK@1" in summary_line(report)


def test_step_limit_option_reaches_the_simulator(bundle):
    report = run_bundle(bundle, step_limit=10)
    assert report["passed"] is False and report["error"]["code"] == "STEP_LIMIT"


def test_fidelities(bundle):
    assert {"reference", "rtl", "cycle"} <= set(FIDELITIES)
    with pytest.raises(ValueError, match="unknown fidelity 'fast'; fidelities: reference, rtl, cycle"):
        run_bundle(bundle, fidelity="fast")
    report = run_bundle(bundle, fidelity="cycle")
    assert report["passed"] and report["cycles"] == report["counters"]["cycles"] > 0


def test_summary_line_formats():
    base = dict(kernel="matmul", config="8x8", fidelity="reference", passed=True, cycles=None, macs=262144,
                utilization=None, wall_s=0.05, mismatch=None, error=None, shape=dict(m=64, k=64, n=64))
    assert summary_line(base) == "PASS matmul 64x64x64 on 8x8 [reference] macs=262144 wall=0.05s"
    rtl = dict(base, fidelity="rtl", cycles=5000, utilization=0.8192, wall_s=2.0)
    assert summary_line(rtl) == ("PASS matmul 64x64x64 on 8x8 [rtl] cycles=5000 util=81.9% macs=262144 "
                                 "wall=2.00s 0.00 Mcycles/s")
    conv = dict(base, kernel="conv2d", shape=dict(h=16, w=16, cin=16, cout=16, kh=3, kw=3, stride=1, pad=1))
    assert summary_line(conv).startswith("PASS conv2d 16x16x16->16 k3x3 s1 p1 on 8x8")


@pytest.mark.parametrize("kind", ["conv2d", "relu", "add", "maxpool"])
def test_every_kernel_bundle_passes(tmp_path, kind):
    assert run_bundle(make_bundle(kind, {}, load_config("4x4"), 2, tmp_path / kind))["passed"] is True


def test_matmul_256_cubed_on_8x8_reference_speed(tmp_path, capsys):
    path = make_bundle("matmul", dict(m=256, k=256, n=256), CFG, 0, tmp_path / "big")
    t0 = time.perf_counter()
    report = run_bundle(path)
    total = time.perf_counter() - t0
    assert report["passed"] and report["counters"]["array_macs"] == 256 ** 3
    with capsys.disabled():
        print(f"\n  256x256x256 matmul on 8x8, reference: simulator {report['wall_s']:.3f}s, "
              f"run_bundle {total:.3f}s")
    assert total < 30, "generous bound; the target is < 5 s"
