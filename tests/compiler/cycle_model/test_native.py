"""The native (C++) engine of the cycle model against the Python model, field by field.

Both engines apply the same rules; the Python model is the readable specification. They
must agree on cycles, every counter, the activity counts, the error code, index and
message, and (when a DRAM image is given) the final DRAM, on random programs (legal and
illegal, short and long) and on every kernel case. Both are also held to the RTL
(test_rtl_golden.py, test_rtl_diff.py).
"""

import numpy as np
import pytest

from npuforge.compiler.cycle_model import native, simulate
from npuforge.compiler.cycle_model.cases import build_case, case_config, kernel_cases
from npuforge.config import load_config
from npuforge.cosim.randprog import random_programs

pytestmark = pytest.mark.skipif(not native.available(), reason="no C++ compiler for the native engine")


def _same(cfg, label, words, dram=None):
    py = simulate(words, cfg, dram, engine="python")
    cc = simulate(words, cfg, dram, engine="native")
    want = (py.cycles, py.counters, py.activity, py.error, py.error_pc, py.error_message)
    got = (cc.cycles, cc.counters, cc.activity, cc.error, cc.error_pc, cc.error_message)
    problems = [] if got == want else [f"{cfg.name} {label}: python {want}\n  native {got}"]
    if dram is not None and not np.array_equal(py.dram, cc.dram):
        problems.append(f"{cfg.name} {label}: final DRAM differs")
    return problems


@pytest.mark.parametrize("preset", ["4x4", "8x8", "16x16", "4x4-v2", "8x8-v2", "4x4-d2", "8x8-v2d2"])
def test_native_equals_python_on_random_programs(preset):
    cfg = case_config(preset)
    problems = []
    for p in random_programs(cfg, 150, seed=7000, illegal_fraction=0.4):
        problems += _same(cfg, f"seed {p.seed} ({p.kind})", p.words, p.dram)
    for p in random_programs(cfg, 8, seed=7500, size="long", illegal_fraction=0.25):
        problems += _same(cfg, f"long seed {p.seed} ({p.kind})", p.words)
    assert not problems, "\n".join(problems[:5]) + f"\n({len(problems)} differences)"


@pytest.mark.parametrize("preset", ["4x4", "8x8", "16x16", "4x4-v2", "8x8-v2", "4x4-d2", "8x8-v2d2"])
def test_native_equals_python_on_every_kernel_case(preset):
    cfg = case_config(preset)
    problems = []
    for name, kind, shape, opts in kernel_cases(cfg):
        c = build_case(cfg, kind, shape, opts)
        problems += _same(cfg, name, c.builder.image().words, c.dram)
    assert not problems, "\n".join(problems)


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["4x4", "8x8", "16x16", "4x4-v2", "8x8-v2", "4x4-d2", "8x8-v2d2"])
def test_native_equals_python_at_full_count(preset):
    cfg = case_config(preset)
    problems = []
    for p in random_programs(cfg, 3000, seed=90_000, illegal_fraction=0.3):
        problems += _same(cfg, f"seed {p.seed} ({p.kind})", p.words)
    for p in random_programs(cfg, 100, seed=95_000, size="long", illegal_fraction=0.2):
        problems += _same(cfg, f"long seed {p.seed} ({p.kind})", p.words)
    assert not problems, "\n".join(problems[:5]) + f"\n({len(problems)} differences)"


def test_auto_falls_back_to_python_without_a_compiler(monkeypatch, tmp_path):
    cfg = load_config("4x4")
    words = next(iter(random_programs(cfg, 1, seed=5))).words
    want = simulate(words, cfg, engine="python")
    monkeypatch.setenv("NPUFORGE_BUILD_DIR", str(tmp_path))
    monkeypatch.setattr(native, "_compiler", lambda: None)
    native.reset()
    try:
        with pytest.warns(RuntimeWarning, match="Python model .* runs instead: no C\\+\\+ compiler"):
            assert not native.available()
        with pytest.raises(native.NativeUnavailable, match="no C\\+\\+ compiler"):
            simulate(words, cfg, engine="native")
        got = _auto_runs_python(monkeypatch, words, cfg)
        assert (got.cycles, got.counters) == (want.cycles, want.counters)
    finally:
        native.reset()


def _auto_runs_python(monkeypatch, words, cfg):
    """simulate() with the default engine, proving that the Python model ran and the native one did not."""
    import npuforge.compiler.cycle_model as cm
    calls = []
    real = cm.simulate_words
    monkeypatch.setattr(cm, "simulate_words", lambda *a, **k: calls.append(1) or real(*a, **k))
    monkeypatch.setattr(native, "simulate_native", lambda *a, **k: pytest.fail("the native engine ran"))
    got = simulate(words, cfg)
    assert calls == [1]
    return got


def test_engine_is_checked():
    cfg = load_config("4x4")
    with pytest.raises(ValueError, match="engine: must be auto, native or python, got 'fast'"):
        simulate([0], cfg, engine="fast")
    with pytest.raises(ValueError, match="every_cycle"):
        simulate([0], cfg, engine="native", every_cycle=True)


def test_benchmark_times_both_engines(tmp_path):
    from npuforge.compiler.cycle_model.bench import benchmark
    r = benchmark("4x4", 24, 16, 20, repeat=1, out_dir=tmp_path / "b", rtl=False)
    assert r["cycles"] > 0 and r["instructions"] > 0
    assert r["native_timing_s"] > 0 and r["python_timing_s"] > 0


def test_a_broken_library_is_reported_and_python_runs_instead(monkeypatch, tmp_path):
    cfg = load_config("4x4")
    words = next(iter(random_programs(cfg, 1, seed=6))).words
    want = simulate(words, cfg, engine="python")
    monkeypatch.setenv("NPUFORGE_BUILD_DIR", str(tmp_path))
    broken = native.library_path()
    broken.parent.mkdir(parents=True)
    broken.write_bytes(b"not a shared object")
    native.reset()
    try:
        with pytest.raises(native.NativeUnavailable, match="cannot be loaded.*delete it to rebuild"):
            simulate(words, cfg, engine="native")
        with pytest.warns(RuntimeWarning, match="cannot be loaded"):
            got = _auto_runs_python(monkeypatch, words, cfg)
        assert (got.cycles, got.counters) == (want.cycles, want.counters)
    finally:
        native.reset()
