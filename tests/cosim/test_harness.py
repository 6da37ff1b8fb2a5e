"""The plain Verilator C++ harness: the same results as the cocotb flow, cached builds, errors."""

import time

import numpy as np
import pytest

from npuforge.assembler.builder import ProgramBuilder
from npuforge.config import load_config
from npuforge.cosim.harness_build import build_harness
from npuforge.cosim.power_build import wrap_long_lines
from npuforge.cosim.randprog import small_matmul_program
from npuforge.cosim.runner import run_rtl
from npuforge.isa import refsim
from npuforge.isa.spec import ErrorCode


def _illegal_program(cfg):
    # Stops on opcode 0 while a matmul still runs: the error and its pc must match exactly.
    a = ProgramBuilder(cfg)
    a.emit("load.sp", sp=0, dram=0, rows=64, len=cfg.cols, stride=cfg.cols, deps=["push_next"])
    a.emit("preload", sp=0, deps=["pop_prev"])
    a.emit("matmul", acc=0, sp=0, rows=64)
    return a.words() + [0]


def _jobs(cfg):
    rng = np.random.default_rng(11)
    dram = np.zeros(0x4000, np.uint8)
    dram[0x100:0x3000] = rng.integers(0, 256, 0x2F00, dtype=np.uint8)
    return [(small_matmul_program(cfg), dram), (_illegal_program(cfg), dram), (small_matmul_program(cfg), dram)]


def test_wrap_long_lines_breaks_only_long_wire_lists():
    long_wire = "  wire [9:0] x = {" + ", ".join(f"\\a{i} " for i in range(500)) + "};"
    long_fmt = '  $fwrite(fd, "{\\"a\\": %0d, \\"b\\": %0d}' + ", x" * 900 + ");"
    out = wrap_long_lines("\n".join(["  wire y = {a, b};", long_wire, long_fmt]))
    lines = out.split("\n")
    assert lines[0] == "  wire y = {a, b};"
    assert lines[-1] == long_fmt                  # a string literal is never split
    assert max(len(x) for x in lines[1:-1]) < 40
    assert "".join(x.strip() for x in lines[1:-1]).replace(",", ", ") == long_wire.strip()


def test_verilator_names_and_missing_members():
    from npuforge.cosim.harness_counting import counters_header, verilator_name
    from npuforge.cosim.toggles import Probe
    assert verilator_name("buf") == "buf"
    assert verilator_name("wp__en") == "wp___05Fen"
    assert verilator_name("a_in$10") == "a_in__02410"
    assert verilator_name("$1") == "__0241"
    header = "        CData/*0:0*/ npuforge_tb__DOT__simtop__DOT__core__DOT__busy;\n"
    probe = Probe("control", "datapath", "x", 4)
    with pytest.raises(RuntimeError, match="no member .*__DOT__datapath__DOT__x for datapath.x"):
        counters_header([probe], [], header)
    header += "        CData/*2:0*/ npuforge_tb__DOT__simtop__DOT__core__DOT__datapath__DOT__x;\n"
    with pytest.raises(RuntimeError, match="datapath.x: 3 bits in the model, 4 in the probe list"):
        counters_header([probe], [], header)


def test_unknown_engine_and_harness_waves_are_refused():
    cfg = load_config("4x4")
    with pytest.raises(ValueError, match="engine must be one of cocotb, harness, not 'iverilog'"):
        run_rtl(([0], None), cfg, engine="iverilog")
    with pytest.raises(ValueError, match="waves need engine='cocotb'"):
        run_rtl(([0], None), cfg, engine="harness", waves=True)


@pytest.mark.rtl
def test_harness_equals_cocotb_flow_and_reference():
    cfg = load_config("4x4")
    jobs = _jobs(cfg)
    h = run_rtl(jobs, cfg, engine="harness", quiet=True)
    c = run_rtl(jobs, cfg, quiet=True)
    assert [r.error for r in h] == [ErrorCode.NONE, ErrorCode.ILLEGAL_INSTR, ErrorCode.NONE]
    for rh, rc in zip(h, c):
        assert (rh.error, rh.error_pc, rh.timed_out) == (rc.error, rc.error_pc, rc.timed_out)
        assert rh.cycles == rc.cycles > 0
        assert rh.counters == rc.counters
        assert np.array_equal(rh.dram, rc.dram)
        assert rh.extra["engine"] == "harness" and rc.extra["engine"] == "cocotb"
        assert 0 < rh.extra["max_rss_bytes"] < 1 << 30
    assert h[1].error_pc == 3
    ref = refsim.run(jobs[0][0], jobs[0][1], cfg)
    assert np.array_equal(h[0].dram, ref.dram) and np.array_equal(h[2].dram, ref.dram)
    assert h[0].cycles == h[2].cycles


@pytest.mark.rtl
def test_harness_counts_the_same_activity_as_the_probed_cocotb_build():
    # The cocotb probe counts are checked against a VCD recount (tests/cosim/test_toggles.py);
    # equal counts here carry that check over to the harness.
    cfg = load_config("4x4")
    jobs = _jobs(cfg)
    h = run_rtl(jobs, cfg, engine="harness", quiet=True, power=True)
    c = run_rtl(jobs, cfg, quiet=True, power=True)
    for rh, rc in zip(h, c):
        assert rh.cycles == rc.cycles and rh.error == rc.error and rh.counters == rc.counters
        assert rh.extra["activity"] == rc.extra["activity"]
    act = h[0].extra["activity"]
    assert act["cycles"] == h[0].cycles and act["toggles"]["array"] > 0
    assert h[0].extra["activity"] == h[2].extra["activity"]


@pytest.mark.rtl
def test_unchanged_harness_build_starts_in_under_a_second():
    cfg = load_config("4x4")
    build_harness(cfg, quiet=True)
    t0 = time.perf_counter()
    b = build_harness(cfg, quiet=True)
    assert time.perf_counter() - t0 < 1.0 and not b.built_now
    assert (b.directory / "npuforge_harness").is_file()
    assert not list(b.directory.glob("*.o"))       # intermediates tidied


@pytest.mark.rtl
def test_bench_cosim_command_smoke_on_4x4(tmp_path, capsys):
    import json

    from npuforge.cli import main
    out = tmp_path / "bench.json"
    assert main(["bench", "cosim", "--configs", "4x4", "--m", "16", "--k", "16", "--n", "16", "--repeats", "1",
                 "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "cocotb/harness" in text and (">=30% PASS" in text or ">=30% MISS" in text)
    assert "4x4     harness_count" in text
    [row] = json.loads(out.read_text())["rows"]
    assert row["cycles"] > 0 and row["cycle_model_exact"]
    assert set(row["cps"]) == {"harness", "harness_count", "cocotb", "cocotb_count"}
    assert all(v > 0 for v in row["cps"].values())
    # each simulator's own peak memory: the harness holds no Python interpreter
    assert 0 < row["max_rss_bytes"]["harness"] < row["max_rss_bytes"]["cocotb"] < 1 << 30
    assert row["ratio"] == pytest.approx(row["cps"]["cocotb"] / row["cps"]["harness"])


@pytest.mark.rtl
def test_bundle_report_is_the_same_from_either_engine(tmp_path):
    from npuforge.compiler.bundle import make_bundle
    from npuforge.run import run_bundle
    cfg = load_config("4x4")
    bdir = make_bundle("matmul", {"m": 8, "k": 12, "n": 8}, cfg, 3, tmp_path / "b")
    h = run_bundle(bdir, fidelity="rtl", engine="harness")
    c = run_bundle(bdir, fidelity="rtl")
    assert h["passed"] and c["passed"]
    assert h["cycles"] == c["cycles"] and h["counters"] == c["counters"]
    assert sorted(h) == sorted(c)


@pytest.mark.rtl
@pytest.mark.slow
def test_bench_three_configs_full_size(tmp_path):
    from npuforge.cosim.bench_cosim import bench_cosim
    res = bench_cosim([load_config(n) for n in ("4x4", "8x8", "16x16")], {"m": 256, "k": 256, "n": 256})
    assert [r["config"] for r in res["rows"]] == ["4x4", "8x8", "16x16"]
    assert all(r["cycle_model_exact"] for r in res["rows"])
