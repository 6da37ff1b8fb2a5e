"""Tiling checks reject what does not fit with a specific error naming the field; defaults always fit."""

import numpy as np
import pytest

from npuforge.compiler.kernels import ConvTiling, EltwiseTiling, KernelError, MatmulTiling, PoolTiling
from npuforge.compiler.kernels import conv2d, eltwise, matmul, maxpool
from npuforge.config import PRESETS, load_config

CFG = load_config("8x8")          # spad_rows 32768, acc_rows 2048, rows = cols = 8


@pytest.mark.parametrize("tiling, message", [
    (MatmulTiling(0, 8), r"tile_m: must be in 1\.\.64 \(rows of the output\), got 0"),
    (MatmulTiling(65, 8), r"tile_m: must be in 1\.\.64"),
    (MatmulTiling(8, 12), r"tile_n: must be a positive multiple of cols=8, got 12"),
    (MatmulTiling(8, 72), r"tile_n: 72 is wider than the output \(64 columns"),
    (MatmulTiling(64, 64, True), None),
])
def test_matmul_tiling_fields(tiling, message):
    shape = dict(m=64, k=64, n=64)
    if message is None:
        tiling.check(shape, CFG)
    else:
        with pytest.raises(KernelError, match=message):
            tiling.check(shape, CFG)


def test_matmul_tiling_capacity_errors_name_the_memory():
    with pytest.raises(KernelError, match=r"tile_m: 300 rows x 128 k-tiles \+ 2 weight slot\(s\) of 8 rows need "
                                          r"38416 scratchpad rows, config '8x8' has spad_rows=32768"):
        MatmulTiling(300, 8).check(dict(m=300, k=1024, n=8), CFG)
    with pytest.raises(KernelError, match=r"tile_n: 2 accumulator block\(s\) of 256 rows x 8 column tiles need "
                                          r"4096 rows, config '8x8' has acc_rows=2048"):
        MatmulTiling(256, 64).check(dict(m=256, k=64, n=64), CFG)
    with pytest.raises(KernelError, match=r"double_buffer: needs token_depth >= 3, config '8x8' has 2"):
        MatmulTiling(8, 8).check(dict(m=8, k=8, n=8), CFG.replace(token_depth=2))
    with pytest.raises(KernelError, match="matmul: n must be an integer >= 1, got -1"):
        MatmulTiling(8, 8).check(dict(m=8, k=8, n=-1), CFG)


def test_conv_pool_eltwise_tiling_errors():
    shape = dict(h=16, w=16, cin=16, cout=16, kh=3, kw=3, stride=1, pad=1)
    with pytest.raises(KernelError, match=r"tile_oh: must be in 1\.\.16 \(output rows\), got 17"):
        ConvTiling(17, 16).check(shape, CFG)
    with pytest.raises(KernelError, match=r"tile_oh: 256 rows x 18 k-tiles .* scratchpad rows.*spad_rows=4096"):
        ConvTiling(16, 16).check(shape, CFG.replace(spad_kib=32))
    with pytest.raises(KernelError, match=r"conv2d: a 5x5 kernel with pad=0 does not fit a 3x3 input"):
        ConvTiling(1, 8).check(dict(shape, h=3, w=3, kh=5, kw=5, pad=0), CFG)
    with pytest.raises(KernelError, match=r"tile_oh: 2 buffer set\(s\) of 9 taps x 8 rows x 14 columns need 2016 "
                                          r"accumulator rows, config '8x8' has acc_rows=1024"):
        PoolTiling(8).check(dict(h=16, w=16, cin=3, kh=3, kw=3, stride=1), CFG.replace(acc_kib=32))
    with pytest.raises(KernelError, match=r"tile_rows: must be in 1\.\.2 \(rows of 8 elements\), got 3"):
        EltwiseTiling(3).check(dict(m=3, n=5), CFG)
    with pytest.raises(KernelError, match=r"tile_rows: 2 buffer set\(s\) of 2 x 600 rows need 2400"):
        EltwiseTiling(600).check(dict(m=600, n=8), CFG, operands=2)


def _fits_or_says_why(module, shape, cfg, *extra):
    """A default tiling passes its own check, or the shape is refused with a 'does not fit' error."""
    try:
        tiling = module.default_tiling(shape, cfg, *extra)
    except KernelError as e:
        assert "does not fit" in str(e), str(e)
        return False
    tiling.check(shape, cfg, *extra)
    return True


@pytest.mark.parametrize("config", PRESETS)
def test_default_tilings_fit_random_shapes(config):
    cfg = load_config(config)
    rng = np.random.default_rng(7)
    fitted = 0
    for _ in range(40):
        m, k, n = (int(v) for v in rng.integers(1, 3000, 3))
        assert _fits_or_says_why(matmul, dict(m=m, k=k, n=n), cfg)
        assert _fits_or_says_why(eltwise, dict(m=m, n=n), cfg, 2)
        kh, kw = (int(v) for v in rng.integers(1, 6, 2))
        s = dict(h=int(rng.integers(kh, 112)), w=int(rng.integers(kw, 112)), cin=int(rng.integers(1, 128)),
                 cout=int(rng.integers(1, 300)), kh=kh, kw=kw, stride=int(rng.integers(1, 4)),
                 pad=int(rng.integers(0, kh)))
        fitted += _fits_or_says_why(conv2d, s, cfg)
        assert _fits_or_says_why(maxpool, dict(h=s["h"], w=s["w"], cin=s["cin"], kh=kh, kw=kw, stride=s["stride"]),
                                 cfg)
    assert fitted >= 32, f"most conv shapes of this range fit, {fitted} of 40 did"
