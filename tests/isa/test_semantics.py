"""The documented requantisation arithmetic, including its one wrapping corner."""

import numpy as np
import pytest

from npuforge.isa.semantics import requant, to_int32, wrap32


@pytest.mark.parametrize("x, m, s, zp, relu, want", [
    (100, 1, 0, 0, False, 100),
    (1000, 1, 0, 0, False, 127),            # saturates
    (-1000, 1, 0, 5, False, -128),
    (5, 1, 1, 0, False, 3),                 # 2.5 rounds half up
    (-5, 1, 1, 0, False, -2),               # -2.5 rounds half up, towards +inf
    (-7, 3, 2, 0, True, 0),                 # ReLU before the zero point
    (-7, 3, 2, -4, True, -4),
    (2**31 - 1, 2**31 - 1, 62, 0, False, 1),
    (-2**31, -2**31, 63, 0, False, -1),     # the documented 64-bit wrap of the rounding add
])
def test_requant_table(x, m, s, zp, relu, want):
    assert requant(np.array([x], dtype=np.int32), m, s, zp, relu)[0] == want


def test_requant_reads_a_register_value_as_signed():
    assert requant(np.array([10], dtype=np.int32), 0xFFFFFFFF, 0)[0] == -10


@pytest.mark.parametrize("shift, zp", [(64, 0), (-1, 0), (0, 128), (0, -129)])
def test_requant_rejects_bad_parameters(shift, zp):
    with pytest.raises(ValueError):
        requant(np.array([1], dtype=np.int32), 1, shift, zp)


def test_wrap32_and_to_int32():
    assert wrap32(np.array([2**31, -2**31 - 1, 2**32 + 5])).tolist() == [-2**31, 2**31 - 1, 5]
    assert to_int32(0x80000000) == -2**31 and to_int32(-1) == -1 and to_int32(7) == 7
