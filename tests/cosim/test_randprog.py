"""The random program generator: deterministic, legal programs are legal and race-free,
and each illegal case gives its error on the reference simulator."""

import numpy as np
import pytest

from npuforge.config import load_config
from npuforge.cosim.randprog import ILLEGAL_CASES, random_program, random_programs, reserved_mask
from npuforge.isa import refsim
from npuforge.isa.encoding import DecodeError, decode
from npuforge.isa.spec import Opcode


def test_same_seed_same_bytes():
    cfg = load_config("8x8")
    a, b = random_program(cfg, 7), random_program(cfg, 7)
    assert a.words == b.words and np.array_equal(a.dram, b.dram)
    c = random_program(cfg, 8)
    assert c.words != a.words


@pytest.mark.parametrize("preset", ["4x4", "8x8", "16x16"])
def test_legal_programs_are_legal_and_race_free(preset):
    cfg = load_config(preset)
    kinds = set()
    for seed in range(40):
        p = random_program(cfg, seed)
        r = refsim.run(p.words, p.dram, cfg, check_races=True, step_limit=100_000)
        kinds |= {k for k, n in r.counts.items() if n}
        assert r.dram_write_bytes > 0
    # every instruction class appears
    assert {"load.sp", "load.acc8", "load.acc32", "preload", "matmul", "vadd", "vmax", "vrelu", "vquant",
            "store.acc32", "store.acc8", "store.sp", "dbnz", "addi", "seti", "fence", "halt"} <= kinds


@pytest.mark.parametrize("case", list(ILLEGAL_CASES))
def test_illegal_cases_give_their_error(case):
    for preset, seed in (("4x4", 3), ("16x16", 11)):
        cfg = load_config(preset)
        p = random_program(cfg, seed, case)
        with pytest.raises(refsim.SimError) as e:
            refsim.run(p.words, p.dram, cfg, step_limit=100_000)
        assert e.value.code == ILLEGAL_CASES[case] == p.expected_error, e.value


def test_mix_holds_every_case():
    cfg = load_config("4x4")
    kinds = [p.kind for p in random_programs(cfg, 4 * len(ILLEGAL_CASES), illegal_fraction=0.25)]
    assert set(kinds) == {"legal"} | set(ILLEGAL_CASES)


def test_reserved_mask_bits_are_illegal():
    for op in Opcode:
        mask = reserved_mask(op)
        assert mask, op
        bit = mask.bit_length() - 1
        with pytest.raises(DecodeError):
            decode(op.value | 1 << bit)


def test_unknown_kind_is_rejected():
    with pytest.raises(ValueError, match="kind"):
        random_program(load_config("4x4"), 0, "no_such_case")


def test_legal_programs_provoke_the_vquant_bubble(monkeypatch):
    # vector_stages: 2 holds a slot that reads the row the VQUANT slot just before it writes: the random
    # programs must reach that case (in a command and across two), or the RTL diff tests cannot time it.
    from npuforge.compiler.cycle_model import engines, simulate
    from npuforge.hw.compute import vquant_bubbles
    cfg = load_config("4x4").replace(vector_stages=2)
    inside = across = 0

    def counting(config, op, rows, src, dst, accumulate, quant_row):
        nonlocal inside, across
        bubbles, last = vquant_bubbles(config, op, rows, src, dst, accumulate, quant_row)
        within = (rows - 1) * (op == Opcode.VQUANT and src + 1 == dst) if rows else 0
        first = int(quant_row is not None and bubbles > within)
        across += first
        inside += bubbles - first
        return bubbles, last

    monkeypatch.setattr(engines, "vquant_bubbles", counting)
    for p in random_programs(cfg, 100, seed=0, illegal_fraction=0):
        simulate(p.words, cfg, engine="python")
    assert inside > 5 and across > 5, (inside, across)
