"""Every kernel matches its numpy reference bit-exactly on the reference simulator (which also
checks that no two units race), for all three presets, on edge shapes and seeded random shapes."""

import numpy as np
import pytest

from npuforge.compiler.kernels import (KERNELS, ConvTiling, EltwiseTiling, KernelError, MatmulTiling, PoolTiling,
                                       Quant)
from npuforge.config import PRESETS, load_config

CONFIGS = {name: load_config(name) for name in PRESETS}


def check(contents):
    got = contents.run_reference(check_races=True)
    mismatch = contents.first_mismatch(got)
    assert mismatch is None, (f"{contents.kernel} {contents.shape} on {contents.config.name} "
                              f"tiling {contents.tiling}: {mismatch}")


EDGE_SHAPES = {
    "matmul": [dict(m=1, k=1, n=1), dict(m=3, k=5, n=7), dict(m=17, k=9, n=33), dict(m=40, k=16, n=16)],
    "conv2d": [dict(h=1, w=1, cin=1, cout=1, kh=1, kw=1, stride=1, pad=0),
               dict(h=5, w=6, cin=3, cout=5, kh=3, kw=3, stride=1, pad=1),
               dict(h=7, w=9, cin=9, cout=17, kh=3, kw=2, stride=2, pad=1),
               dict(h=4, w=4, cin=2, cout=3, kh=3, kw=3, stride=3, pad=2)],
    "relu": [dict(m=1, n=1), dict(m=3, n=5), dict(m=33, n=17)],
    "add": [dict(m=1, n=1), dict(m=5, n=3), dict(m=31, n=19)],
    "maxpool": [dict(h=1, w=1, cin=1, kh=1, kw=1, stride=1), dict(h=5, w=7, cin=3, kh=2, kw=3, stride=1),
                dict(h=9, w=8, cin=20, kh=3, kw=3, stride=2)],
}


def random_shape(kind: str, rng: np.random.Generator) -> dict:
    r = lambda lo, hi: int(rng.integers(lo, hi + 1))   # noqa: E731
    if kind == "matmul":
        return dict(m=r(1, 90), k=r(1, 70), n=r(1, 70))
    if kind == "conv2d":
        kh, kw, stride = r(1, 3), r(1, 3), r(1, 2)
        return dict(h=r(kh, 12), w=r(kw, 12), cin=r(1, 20), cout=r(1, 20), kh=kh, kw=kw, stride=stride,
                    pad=r(0, max(kh, kw) - 1))
    if kind in ("relu", "add"):
        return dict(m=r(1, 80), n=r(1, 80))
    kh, kw = r(1, 3), r(1, 3)
    return dict(h=r(kh, 14), w=r(kw, 14), cin=r(1, 24), kh=kh, kw=kw, stride=r(1, 3))


@pytest.mark.parametrize("config", PRESETS)
@pytest.mark.parametrize("kind", sorted(KERNELS))
def test_defaults_and_edge_shapes(kind, config):
    cfg = CONFIGS[config]
    check(KERNELS[kind].build(cfg, {}, 0))
    for i, shape in enumerate(EDGE_SHAPES[kind]):
        check(KERNELS[kind].build(cfg, shape, i + 1))


@pytest.mark.parametrize("config", PRESETS)
@pytest.mark.parametrize("kind", sorted(KERNELS))
def test_random_shapes_and_seeds(kind, config):
    rng = np.random.default_rng(1000 + sorted(KERNELS).index(kind) * 10 + PRESETS.index(config))
    for _ in range(4):
        shape = random_shape(kind, rng)
        check(KERNELS[kind].build(CONFIGS[config], shape, int(rng.integers(1 << 16))))


@pytest.mark.parametrize("config", PRESETS)
def test_matmul_int8_output_with_requant_and_relu(config):
    cfg = CONFIGS[config]
    for i, quant in enumerate([Quant(1 << 14, 22), Quant(-12345, 20, zp=-7, relu=True), Quant(3, 0, zp=5)]):
        contents = KERNELS["matmul"].build(cfg, dict(m=19, k=23, n=21), i, quant=quant)
        assert contents.tensors["C"].dtype == "int8"
        check(contents)


@pytest.mark.parametrize("config", PRESETS)
def test_conv2d_relu_and_zero_point(config):
    check(KERNELS["conv2d"].build(CONFIGS[config], dict(h=6, w=5, cin=7, cout=9, kh=3, kw=3, stride=1, pad=1), 3,
                                  relu=True, zp=-20))


def test_non_default_tilings_cover_loops_and_edges():
    cfg = CONFIGS["8x8"]
    # Several row blocks with a short last one, several column blocks, single buffering.
    for tiling in [MatmulTiling(7, 8, False), MatmulTiling(16, 16, True), MatmulTiling(30, 24, False),
                   MatmulTiling(16, 16, True, stream_a=False), MatmulTiling(45, 40, False, stream_a=False)]:
        check(KERNELS["matmul"].build(cfg, dict(m=45, k=19, n=37), 5, tiling=tiling))
    for tiling in [ConvTiling(1, 8, True), ConvTiling(2, 8, False), ConvTiling(3, 16, True)]:
        check(KERNELS["conv2d"].build(cfg, dict(h=7, w=6, cin=10, cout=20, kh=3, kw=3, stride=1, pad=1), 6,
                                      tiling=tiling))
    for tiling in [EltwiseTiling(1, True), EltwiseTiling(3, False), EltwiseTiling(5, True)]:
        check(KERNELS["add"].build(cfg, dict(m=5, n=9), 7, tiling=tiling))
        check(KERNELS["relu"].build(cfg, dict(m=5, n=9), 7, tiling=tiling))
    for tiling in [PoolTiling(1, True), PoolTiling(2, False), PoolTiling(1, True, 3), PoolTiling(1, False, 1)]:
        check(KERNELS["maxpool"].build(cfg, dict(h=9, w=9, cin=11, kh=3, kw=3, stride=2), 8, tiling=tiling))


def test_add_saturates_and_relu_clamps():
    contents = KERNELS["add"].build(CONFIGS["4x4"], dict(m=16, n=16), 11)
    out = contents.run_reference()["out"]
    x, y = (contents.dram[contents.tensors[n].addr:][:256].view(np.int8).astype(int) for n in ("x", "y"))
    s = (x + y).reshape(16, 16)
    assert (s > 127).any() and (s < -128).any()      # the seed exercises both saturation ends
    assert np.array_equal(out, np.clip(s, -128, 127))


@pytest.mark.parametrize("config", PRESETS)
def test_big_matmul_program_size_does_not_grow_with_the_matrix(config):
    cfg = CONFIGS[config]
    sizes = {}
    for n in (256, 1024):
        from npuforge.compiler.kernels import Emitter, lower_matmul
        em = Emitter(cfg)
        lower_matmul(em, dict(m=n, k=n, n=n), 0, 1 << 21, 1 << 22)
        sizes[n] = len(em.b)
        assert sizes[n] < cfg.imem_words
    assert sizes[1024] < 2 * sizes[256] + 64, sizes


def test_program_too_large_names_the_shape():
    cfg = CONFIGS["8x8"].replace(imem_words=64)
    with pytest.raises(KernelError, match=r"conv2d \(h=16, w=16, .*\): the program needs \d+ instructions, "
                                          r"more than the instruction memory .*imem_words=64"):
        KERNELS["conv2d"].build(cfg, {}, 0)


def test_matmul_streams_long_rows_and_reuses_activations():
    """256^3 on 8x8: every weight tile is loaded once, every matmul streams 256 rows."""
    contents = KERNELS["matmul"].build(CONFIGS["8x8"], dict(m=256, k=256, n=256), 0)
    assert contents.tiling["tile_m"] == 256
    text = contents.builder.text()
    assert "rows=256" in text
    from npuforge.isa import refsim
    r = refsim.run(contents.builder.image(), contents.dram, contents.config)
    assert r.counts["preload"] == (256 // 8) ** 2
    assert r.dram_read_bytes == 2 * 256 * 256          # A once, B once
    assert r.array_macs == 256 ** 3
