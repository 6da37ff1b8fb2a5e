"""The assembler fuzzer: random and mutated text only ever raises AsmError."""

import random

import pytest

from npuforge.assembler.asm import assemble
from npuforge.assembler.fuzz import fuzz, fuzz_input, main, random_program
from npuforge.config import load_config

CFG = load_config("8x8")


def test_reduced_fuzz_run_has_no_crashes():
    result = fuzz(3000, seed=1, config=CFG)
    assert result.crashes == [], result.crashes[0][0][:2000] + "\n" + result.crashes[0][1]
    assert result.inputs == 3000 == result.assembled + result.rejected
    # Both outcomes must be well represented, or the fuzzer is not reaching past the front end.
    assert result.assembled > 300 and result.rejected > 1500


@pytest.mark.slow
def test_full_fuzz_run_has_no_crashes():
    result = fuzz(100_000, seed=0, config=CFG)
    assert result.crashes == [], result.crashes[0][0][:2000] + "\n" + result.crashes[0][1]


def test_generated_programs_are_valid_for_every_preset():
    rng = random.Random(7)
    for preset in ("4x4", "8x8", "16x16"):
        cfg = load_config(preset)
        for _ in range(50):
            assemble(random_program(rng, rng.randint(0, 16)), cfg)


def test_inputs_are_deterministic():
    def inputs(seed):
        rng = random.Random(seed)
        corpus = [random_program(rng, 5) for _ in range(4)]
        return [fuzz_input(rng, corpus) for _ in range(50)]
    assert inputs(3) == inputs(3)
    assert inputs(3) != inputs(4)


def test_command_line_summary(capsys):
    assert main(["--count", "200", "--seed", "5"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-1].startswith("fuzz: 200 inputs, 0 crashes, ")
    assert "rejected with AsmError" in out[-1] and "assembled" in out[-1]
