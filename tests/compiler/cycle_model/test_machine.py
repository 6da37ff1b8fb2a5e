"""The cycle model alone: documented timing formulas, agreement with the reference simulator, the fidelity."""

import json

import numpy as np
import pytest

from npuforge.assembler.builder import ProgramBuilder
from npuforge.compiler.bundle import make_bundle
from npuforge.compiler.cycle_model import CycleResult, simulate
from npuforge.config import load_config
from npuforge.cosim.randprog import random_programs
from npuforge.hw.compute import array_latency
from npuforge.hw.counters import COUNTER_NAMES
from npuforge.hw.requant import Requant
from npuforge.isa import refsim
from npuforge.isa.image import ProgramImage
from npuforge.isa.spec import ErrorCode
from npuforge.run import run_bundle

CFG8 = load_config("8x8")
CFG4 = load_config("4x4")


def _program(config, lines):
    b = ProgramBuilder(config)
    for mnemonic, kwargs in lines:
        b.emit(mnemonic, **kwargs)
    b.emit("halt")
    return b.words()


def test_halt_only_takes_one_cycle():
    r = simulate(_program(CFG8, []), CFG8)
    assert r.cycles == 1 and r.error == ErrorCode.NONE
    assert set(r.counters) == set(COUNTER_NAMES)
    assert r.counters["instructions"] == 1
    assert sum(v for k, v in r.counters.items() if k not in ("cycles", "instructions")) == 0


@pytest.mark.parametrize("preset", ["4x4", "8x8", "16x16"])
def test_lone_preload_follows_docs_timing(preset):
    # docs/timing.md: written in cycle 1, taken in 2, accepted in 3 (section 3); done at
    # A + S + L + 2 with S = R (section 4); the run ends in the first cycle every unit is idle.
    cfg = load_config(preset)
    r = simulate(_program(cfg, [("preload", {"sp": 0})]), cfg)
    done = 3 + cfg.rows + array_latency(cfg) + 2
    assert r.cycles == done + 1
    assert r.counters["compute_busy"] == done - 3
    assert r.counters["instructions"] == 2


def test_lone_load_follows_docs_timing():
    cfg = CFG8
    rows, length = 10, 8
    r = simulate(_program(cfg, [("load.sp", {"sp": 0, "dram": 16, "rows": rows, "len": length, "stride": 32})]),
                 cfg)
    items = rows * 1                                    # aligned 8-byte rows: one 16-byte beat each
    done = 3 + items + cfg.dram_latency + 2             # section 5, port granted every cycle
    assert r.cycles == done + 1
    assert r.counters["dram_read_beats"] == items
    assert r.counters["dram_read_bytes"] == rows * length


def test_unaligned_store_follows_docs_timing():
    cfg = CFG8
    rows, length, dram = 6, 8, 5                        # 32 bytes from offset 5: 3 beats a row
    r = simulate(_program(cfg, [("store.acc32", {"dram": dram, "acc": 0, "rows": rows, "len": length,
                                                 "stride": 64})]), cfg)
    beats = sum((dram + 64 * i) % 16 // 16 + ((dram + 64 * i) % 16 + 4 * length - 1) // 16 + 1 for i in range(rows))
    assert beats == 3 * rows
    done = 3 + Requant.LATENCY + 3 + beats              # section 6
    assert r.cycles == done + 1
    assert r.counters["dram_write_beats"] == beats


@pytest.mark.parametrize("n", [8, 37])
def test_preload_matmul_pairs_cost_r_plus_n_each(n):
    # Section 4: back to back, a preload + matmul(n) pair costs R + n cycles.
    def cycles(pairs):
        lines = []
        for _ in range(pairs):
            lines += [("preload", {"sp": 0}), ("matmul", {"acc": 0, "sp": 0, "rows": n})]
        return simulate(_program(CFG8, lines), CFG8).cycles
    assert cycles(6) - cycles(5) == CFG8.rows + n
    assert cycles(7) - cycles(6) == CFG8.rows + n


def test_dispatch_errors_stop_in_their_decode_cycle():
    b = ProgramBuilder(CFG8)
    b.emit("seti", rd=1, imm=CFG8.spad_rows)
    b.emit("nop")
    b.emit("load.sp", sp=(1, 0), dram=0, rows=1, len=1, stride=0)
    b.emit("halt")
    r = simulate(b.words(), CFG8)
    assert (r.error, r.error_pc, r.cycles) == (ErrorCode.ADDR_RANGE, 2, 3)
    assert r.counters["instructions"] == 2


@pytest.mark.parametrize("preset", ["4x4", "8x8"])
def test_random_programs_agree_with_reference_simulator(preset):
    cfg = load_config(preset)
    for p in random_programs(cfg, 40, seed=7000, illegal_fraction=0.3):
        r = simulate(p.words, cfg, p.dram)
        try:
            ref = refsim.run(p.words, p.dram, cfg)
        except refsim.SimError as e:
            assert (r.error, r.error_pc) == (e.code, e.pc), (p.seed, p.kind)
            continue
        assert r.error == ErrorCode.NONE, (p.seed, p.kind, r.error_message)
        assert np.array_equal(r.dram, ref.dram), (p.seed, p.kind)
        assert r.counters["instructions"] == ref.dispatched
        assert r.counters["dram_read_bytes"] == ref.dram_read_bytes
        assert r.counters["dram_write_bytes"] == ref.dram_write_bytes


def test_same_program_same_result():
    p = next(iter(random_programs(CFG4, 1, seed=11, illegal_fraction=0)))
    for engine in ("python", "auto"):
        a, b = simulate(p.words, CFG4, p.dram, engine=engine), simulate(p.words, CFG4, p.dram, engine=engine)
        assert (a.cycles, a.counters) == (b.cycles, b.counters)
        assert np.array_equal(a.dram, b.dram)


def test_timing_does_not_need_dram():
    p = next(iter(random_programs(CFG4, 1, seed=12, illegal_fraction=0)))
    a, b = simulate(p.words, CFG4, engine="python"), simulate(p.words, CFG4, p.dram, engine="python")
    assert isinstance(a, CycleResult) and a.dram is None
    assert (a.cycles, a.counters) == (b.cycles, b.counters)


def test_cycle_fidelity_report(tmp_path):
    path = make_bundle("matmul", {"m": 24, "k": 16, "n": 16}, CFG8, 3, tmp_path / "mm")
    report = run_bundle(path, "cycle")
    assert report["passed"] and report["fidelity"] == "cycle"
    assert report["cycles"] == report["counters"]["cycles"] > 0
    assert set(report["counters"]) == set(COUNTER_NAMES)
    assert 0 < report["utilization"] < 1
    assert json.loads((path / "report.json").read_text())["cycles"] == report["cycles"]


def test_cycle_fidelity_reports_program_errors(tmp_path):
    path = make_bundle("relu", {"m": 8, "n": 8}, CFG8, 0, tmp_path / "relu")
    image = ProgramImage.load(path / "program.bin")
    # A zero word in place of the final halt traps as ILLEGAL_INSTR at that index.
    broken = ProgramImage(image.words[:-1] + (0,), image.config_hash)
    (path / "program.bin").write_bytes(broken.to_bytes())
    report = run_bundle(path, "cycle")
    assert not report["passed"]
    assert report["error"]["code"] == "ILLEGAL_INSTR"
    assert report["error"]["pc"] == len(image.words) - 1


@pytest.mark.parametrize("preset", ["4x4", "16x16"])
def test_fast_paths_equal_cycle_by_cycle_evaluation(preset):
    # Jumps between events, the dispatcher's run of scalars and the store's run-ahead must
    # change nothing: compare with evaluating every cycle, on programs where the load and
    # store engines compete for the port (long random programs, a matmul with stores).
    from npuforge.compiler.cycle_model.cases import build_case
    cfg = load_config(preset)
    programs = [p.words for p in random_programs(cfg, 6, seed=900, size="long", illegal_fraction=0.3)]
    programs.append(build_case(cfg, "matmul", {"m": 40, "k": 24, "n": 3 * cfg.cols}, {}).builder.image().words)
    for words in programs:
        fast, slow = simulate(words, cfg, engine="python"), simulate(words, cfg, every_cycle=True)
        assert (fast.cycles, fast.error, fast.error_pc, fast.counters) == \
            (slow.cycles, slow.error, slow.error_pc, slow.counters)


def test_activity_counts_follow_the_commands():
    lines = [("load.sp", {"sp": 0, "dram": 0, "rows": 8, "len": 8, "stride": 8}),
             ("preload", {"sp": 0}),
             ("matmul", {"acc": 0, "sp": 0, "rows": 5, "accumulate": True}),
             ("vadd", {"dst": 8, "src": 0, "rows": 3}),
             ("store.acc8", {"dram": 512, "acc": 0, "rows": 4, "len": 8, "stride": 8, "qreg": 0})]
    a = simulate(_program(CFG8, lines), CFG8).activity
    assert a["spad_writes"] == 8
    assert a["spad_reads"] == CFG8.rows + 5
    assert a["array_macs"] == 5 * CFG8.rows * CFG8.cols and a["array_weight_rows"] == CFG8.rows
    assert a["acc_reads"] == 5 + 2 * 3 + 4        # accumulate, vadd's two operands, the store
    assert a["acc_writes"] == 5 + 3
    assert a["requant_rows"] == 4 and a["vector_rows"] == a["vadd_rows"] == 3
    assert a["vmax_rows"] == a["vrelu_rows"] == a["vquant_rows"] == 0


def test_matmul_activity_matches_the_reference_macs():
    from npuforge.compiler.cycle_model.cases import build_case
    c = build_case(CFG8, "matmul", {"m": 40, "k": 24, "n": 16}, {})
    r = simulate(c.builder.image(), CFG8)
    ref = refsim.run(c.builder.image(), c.dram, CFG8)
    assert r.activity["array_macs"] == ref.array_macs > 0


def test_watchdog_stops_a_program_that_never_ends():
    from npuforge.compiler.cycle_model import CycleLimit
    b = ProgramBuilder(CFG8)
    b.emit("dbnz", rd=1, target=0)      # r1 = 0: counts down through 2**32 before falling through
    b.emit("halt")
    with pytest.raises(CycleLimit, match="max_cycles=5000"):
        simulate(b.words(), CFG8, max_cycles=5000)
