"""The numpy references against plain Python loops (independent of numpy broadcasting tricks)."""

import itertools

import numpy as np

from npuforge.compiler import golden


def _rng(seed):
    return np.random.default_rng(seed)


def test_matmul_matches_loops_and_wraps_int32():
    rng = _rng(0)
    a = rng.integers(-128, 128, (5, 7), dtype=np.int8)
    b = rng.integers(-128, 128, (7, 3), dtype=np.int8)
    want = [[sum(int(a[i, k]) * int(b[k, j]) for k in range(7)) for j in range(3)] for i in range(5)]
    assert golden.matmul(a, b).dtype == np.int32
    assert golden.matmul(a, b).tolist() == want
    # K large enough to overflow int32: -128 * -128 * 2**17 = 2**31 wraps to -2**31.
    big = golden.matmul(np.full((1, 1 << 17), -128, np.int8), np.full((1 << 17, 1), -128, np.int8))
    assert big[0, 0] == -(1 << 31)


def test_matmul_requant_rounds_half_up_and_saturates():
    a = np.array([[1, 3, 5, -1, -3, 100]], np.int8).T
    b = np.ones((1, 1), np.int8)
    # x * 1 >> 1 with round half up: 1 -> 1, 3 -> 2, 5 -> 3, -1 -> 0, -3 -> -1; 100 -> 50
    got = golden.matmul(a, b, dict(multiplier=1, shift=1, zp=0, relu=False))
    assert got[:, 0].tolist() == [1, 2, 3, 0, -1, 50]
    got = golden.matmul(a, b, dict(multiplier=1000, shift=0, zp=0, relu=True))
    assert got[:, 0].tolist() == [127, 127, 127, 0, 0, 127]


def test_conv2d_matches_direct_loops():
    rng = _rng(1)
    h, w, cin, cout, kh, kw, s, pad = 5, 6, 3, 4, 3, 2, 2, 1
    x = rng.integers(-128, 128, (h, w, cin), dtype=np.int8)
    wt = rng.integers(-128, 128, (kh, kw, cin, cout), dtype=np.int8)
    bias = rng.integers(-1000, 1000, (cout,), dtype=np.int32)
    acc = golden.conv2d_acc(x, wt, bias, s, pad)
    oh, ow = golden.conv_out_size(h, kh, s, pad), golden.conv_out_size(w, kw, s, pad)
    assert acc.shape == (oh, ow, cout) == (3, 4, 4)
    for o, p, c in itertools.product(range(oh), range(ow), range(cout)):
        total = int(bias[c])
        for i, j, ci in itertools.product(range(kh), range(kw), range(cin)):
            y, xx = o * s + i - pad, p * s + j - pad
            if 0 <= y < h and 0 <= xx < w:
                total += int(x[y, xx, ci]) * int(wt[i, j, ci, c])
        assert acc[o, p, c] == total
    q = dict(multiplier=3, shift=4, zp=-2, relu=True)
    out = golden.conv2d(x, wt, bias, s, pad, q)
    assert out.dtype == np.int8 and out.min() >= -2


def test_relu_add_maxpool():
    x = np.array([[-128, -1, 0, 1, 127]], np.int8)
    assert golden.relu(x).tolist() == [[0, 0, 0, 1, 127]]
    assert golden.add(x, x).tolist() == [[-128, -2, 0, 2, 127]]
    rng = _rng(2)
    img = rng.integers(-128, 128, (7, 8, 3), dtype=np.int8)
    out = golden.maxpool(img, 3, 2, 2)
    assert out.shape == (3, 4, 3)
    for o, p, c in itertools.product(range(3), range(4), range(3)):
        assert out[o, p, c] == max(int(img[o * 2 + i, p * 2 + j, c]) for i in range(3) for j in range(2))
