"""The cycle model against cycles and counters the RTL measured (rtl_golden.json), without Verilator.

The record holds, per preset, 30 random programs (half of them illegal: every illegal case,
deadlocks included) and the quick kernel cases, each with its program words and what the
RTL reported; ``python -m npuforge.compiler.cycle_model.cases PATH`` regenerates it when
the RTL's timing changes on purpose (test_rtl_diff.py notices).
"""

import json
from pathlib import Path

import pytest

from npuforge.compiler.cycle_model import native, simulate
from npuforge.compiler.cycle_model.cases import pack_words, unpack_words
from npuforge.config import load_config

RECORD = json.loads((Path(__file__).parent / "rtl_golden.json").read_text())


@pytest.mark.parametrize("engine", ["native", "python"])
@pytest.mark.parametrize("preset", sorted(RECORD))
def test_model_matches_recorded_rtl(preset, engine):
    if engine == "native" and not native.available():
        pytest.skip("no C++ compiler for the native engine")
    rec = RECORD[preset]
    cfg = load_config(preset)
    assert cfg.hash == rec["config_hash"], f"{preset}: the preset changed; regenerate rtl_golden.json"
    problems = []
    for run in rec["runs"]:
        m = simulate(unpack_words(run["words"]), cfg, engine=engine)
        got = (m.cycles, m.error.name, m.error_pc)
        want = (run["cycles"], run["error"], run["error_pc"])
        diff = {k: (v, m.counters[k]) for k, v in run["counters"].items() if m.counters[k] != v}
        if got != want or diff:
            problems.append(f"{preset} {run['label']}: RTL {want}, model {got}, counters (RTL, model) {diff}")
    assert not problems, "\n".join(problems)


def test_record_covers_deadlocks_and_dispatch_errors():
    errors = {run["error"] for rec in RECORD.values() for run in rec["runs"]}
    assert {"NONE", "DEADLOCK", "ILLEGAL_INSTR", "ADDR_RANGE", "PC_RANGE"} <= errors, errors


def test_packed_words_round_trip():
    words = (0, 1, (1 << 128) - 1, 0x1234 << 100)
    assert unpack_words(pack_words(words)) == words
