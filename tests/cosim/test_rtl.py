"""The co-simulation flow on the RTL: build cache, image loading, one program, bundles."""

import time

import numpy as np
import pytest

from npuforge.assembler.builder import ProgramBuilder
from npuforge.config import load_config
from npuforge.cosim.build import build_rtl
from npuforge.cosim.randprog import small_matmul_program
from npuforge.cosim.runner import run_rtl
from npuforge.isa import refsim
from npuforge.isa.spec import ErrorCode

pytestmark = pytest.mark.rtl




def test_program_matches_reference_and_state_is_fresh_per_job():
    cfg = load_config("4x4")
    rng = np.random.default_rng(3)
    dram = np.zeros(0x4000, np.uint8)
    dram[0x100:0x3000] = rng.integers(0, 256, 0x2F00, dtype=np.uint8)
    words = small_matmul_program(cfg)
    ref = refsim.run(words, dram, cfg)
    # the same job twice, with an illegal one between: every job starts from zeroed state
    res = run_rtl([(words, dram), ([0], None), (words, dram)], cfg, quiet=True)
    assert [r.error for r in res] == [ErrorCode.NONE, ErrorCode.ILLEGAL_INSTR, ErrorCode.NONE]
    assert np.array_equal(res[0].dram, ref.dram) and np.array_equal(res[2].dram, ref.dram)
    assert res[0].cycles == res[2].cycles > 0
    assert res[0].counters["dram_read_bytes"] == ref.dram_read_bytes
    assert res[0].counters["dram_write_bytes"] == ref.dram_write_bytes


def test_full_dram_image_loads_fast_and_exactly():
    cfg = load_config("4x4")
    img = np.random.default_rng(0).integers(0, 256, cfg.dram_bytes, dtype=np.uint8)
    b = ProgramBuilder(cfg)
    # move the last beats around so the dump covers a range at the very end of DRAM
    b.emit("load.sp", sp=0, dram=cfg.dram_bytes - 64, rows=16, len=4, stride=4, deps=["push_next"])
    b.emit("vrelu", dst=0, src=0, rows=0, deps=["pop_prev", "push_next"])
    b.emit("store.sp", dram=cfg.dram_bytes - 128, sp=0, rows=16, len=4, stride=4, deps=["pop_prev"])
    b.emit("halt")
    [r] = run_rtl([(b.words(), img)], cfg, quiet=True)
    assert r.error == ErrorCode.NONE
    assert np.array_equal(r.dram, refsim.run(b.words(), img, cfg).dram)
    assert r.sim_wall_s < 2.0, f"16 MiB load + run + dump took {r.sim_wall_s:.2f} s"


def test_cached_build_is_reused_quickly():
    cfg = load_config("4x4")
    build_rtl(cfg, quiet=True)
    t = time.perf_counter()
    again = build_rtl(cfg, quiet=True)
    assert not again.built_now and time.perf_counter() - t < 1.0
    assert again.directory.name.startswith(cfg.hash + "-")
    assert (again.directory / "npuforge_tb").is_file()


def test_waves_are_written_where_asked(tmp_path):
    cfg = load_config("4x4")
    words = small_matmul_program(cfg)
    [r] = run_rtl([(words, None)], cfg, waves=True, wave_path=tmp_path / "w", quiet=True)
    wave = tmp_path / ("w.fst" if r.extra["waves"].endswith(".fst") else "w.vcd")
    assert r.extra["waves"] == str(wave) and wave.stat().st_size > 1000
    if wave.suffix == ".vcd":
        head = wave.read_bytes()[:200_000]
        assert b"finished" in head and b"$enddefinitions" in head


def test_a_run_stopped_mid_command_does_not_leak_into_the_next():
    # Job A stops on an illegal word while a long matmul is still writing the accumulator;
    # job B stores accumulator rows it never wrote, which must read as zero.
    cfg = load_config("4x4")
    a = ProgramBuilder(cfg)
    a.emit("load.sp", sp=0, dram=0, rows=1024, len=4, stride=4, deps=["push_next"])
    a.emit("preload", sp=0, deps=["pop_prev"])
    a.emit("matmul", acc=0, sp=0, rows=1024)
    a.emit("seti", rd=1, imm=1300)      # wait until the matmul is half done
    a.label("wait")
    a.emit("dbnz", rd=1, target="wait")
    words_a = a.words() + [0]           # opcode 0: ILLEGAL_INSTR while the matmul runs
    b = ProgramBuilder(cfg)
    b.emit("store.acc32", dram=0x10000, acc=0, rows=1024, len=4, stride=16)
    b.emit("halt")
    dram = np.random.default_rng(5).integers(1, 128, 4096, dtype=np.uint8)
    ra, rb = run_rtl([(words_a, dram), (b.words(), dram)], cfg, quiet=True)
    assert ra.error == ErrorCode.ILLEGAL_INSTR and ra.error_pc == 5
    assert rb.error == ErrorCode.NONE
    assert np.array_equal(rb.dram, refsim.run(b.words(), dram, cfg).dram)
