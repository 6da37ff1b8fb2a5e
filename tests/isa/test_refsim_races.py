"""The optional race check: unordered conflicting accesses are found, token-ordered ones are not."""

import numpy as np
import pytest

from npuforge.assembler.builder import ProgramBuilder
from npuforge.config import load_config
from npuforge.isa.refsim import RaceError, run
from npuforge.isa.refsim_races import Access, overlap
from npuforge.isa.spec import Opcode

CFG = load_config("4x4").replace(dram_mib=1)
NOOP = dict(sp=0, dram=0, rows=0, len=0, stride=0)


def image(*body):
    b = ProgramBuilder(CFG)
    for mnemonic, operands in body:
        b.emit(mnemonic, **operands)
    b.emit("halt")
    return b.image()


def op(mnemonic, **operands):
    return mnemonic, operands


def race(*body) -> RaceError:
    with pytest.raises(RaceError) as info:
        run(image(*body), b"", CFG, check_races=True)
    return info.value


def test_load_then_matmul_without_token_is_a_race():
    err = race(op("load.sp", sp=0, dram=0, rows=8, len=4, stride=4),
               op("nop"),
               op("matmul", acc=0, sp=6, rows=4))
    assert (err.first.pc, err.second.pc, err.where) == (0, 2, 6)
    assert str(err) == ("race: instruction 0 (load unit, load.sp writes scratchpad rows [0, 8)) and instruction 2 "
                        "(compute unit, matmul reads scratchpad rows [6, 10)) both touch scratchpad row 6, "
                        "and no token path orders them")
    # Without the check the same program runs (its result is just not defined by the ISA).
    run(image(op("load.sp", sp=0, dram=0, rows=8, len=4, stride=4), op("matmul", acc=0, sp=6, rows=4)), b"", CFG)


@pytest.mark.parametrize("sync", [
    [op("load.sp", **NOOP, deps=["push_next"]), op("vadd", dst=0, src=0, rows=0, deps=["pop_prev"])],  # token
    [op("fence")],
])
def test_token_or_fence_orders_accesses(sync):
    res = run(image(op("load.sp", sp=0, dram=0, rows=8, len=4, stride=4), *sync,
                    op("matmul", acc=0, sp=6, rows=2)), b"", CFG, check_races=True)
    assert res.counts["matmul"] == 1


def test_write_after_read_needs_a_token():
    # compute reads rows 0..3, then the load overwrites them: C2L must order the two.
    body = [op("preload", sp=0), op("load.sp", sp=2, dram=0, rows=1, len=4, stride=0)]
    err = race(*body)
    assert (err.first.pc, err.second.pc) == (0, 1) and "load.sp writes" in str(err)
    ok = [op("preload", sp=0, deps=["push_prev"]), op("load.sp", sp=2, dram=0, rows=1, len=4, stride=0,
                                                     deps=["pop_next"])]
    run(image(*ok), b"", CFG, check_races=True)


def test_transitive_path_store_to_load_through_compute():
    store = op("store.sp", sp=0, dram=100, rows=2, len=4, stride=8, deps=["push_prev"])
    load = op("load.sp", sp=10, dram=108, rows=1, len=4, stride=0)
    err = race(op("store.sp", sp=0, dram=100, rows=2, len=4, stride=8), load)
    assert err.where == 108 and "DRAM bytes [100, 112), 2 rows of 4 every 8" in str(err)
    ordered = [store, op("vadd", dst=0, src=0, rows=0, deps=["pop_next", "push_prev"]),
               op("load.sp", sp=10, dram=108, rows=1, len=4, stride=0, deps=["pop_next"])]
    run(image(*ordered), b"", CFG, check_races=True)


def test_interleaved_dram_rows_do_not_race():
    # Two units write alternate 4-byte slots of the same region: no byte in common.
    body = [op("load.acc8", acc=0, dram=0, rows=2, len=4, stride=4), op("fence"),
            op("store.acc8", dram=200, acc=0, rows=8, len=4, stride=8, qreg=0),
            op("load.sp", sp=0, dram=204, rows=8, len=4, stride=8)]
    run(image(*body), b"", CFG, check_races=True)
    body[-1] = op("load.sp", sp=0, dram=203, rows=8, len=2, stride=8)
    assert race(*body).where == 203


def test_overlap_exact_on_strided_sets():
    def dram(first, rows, nbytes, stride):
        return Access(0, 1, 0, Opcode.LOAD_SP, "dram", False, first, rows, nbytes, stride)
    rng = np.random.default_rng(3)
    for _ in range(300):
        a = dram(*(int(x) for x in (rng.integers(0, 60), rng.integers(1, 6), rng.integers(1, 6), rng.integers(0, 12))))
        b = dram(*(int(x) for x in (rng.integers(0, 60), rng.integers(1, 6), rng.integers(1, 6), rng.integers(0, 12))))
        sa = {a.first + i * a.stride + j for i in range(a.rows) for j in range(a.nbytes)}
        sb = {b.first + i * b.stride + j for i in range(b.rows) for j in range(b.nbytes)}
        common = sa & sb
        assert overlap(a, b) == (min(common) if common else None), (a, b)
