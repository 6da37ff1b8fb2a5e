"""Both arrays against numpy: whole tiles, and weight writes interleaved with activations (each one's visibility rule).

The weight-stationary SystolicArray and the OutputStationaryArray share ports and the row
contract; they differ in latency and in exactly which weight writes a row sees.
"""

import numpy as np
import pytest
from amaranth.sim import Simulator

from npuforge.hw.array import SystolicArray
from npuforge.hw.array_os import OutputStationaryArray

ARRAYS = [SystolicArray, OutputStationaryArray]
# Row c sees, for weight row k, the last write of k presented in a cycle t <= bound(c, k, rows).
SEES_UP_TO = {
    SystolicArray: lambda c, k, rows: c + k - 1,
    OutputStationaryArray: lambda c, k, rows: c + k - c % rows,
}


def _simulate(cls, rows, cols, events):
    """Drive one event per cycle: ``(act row or None, (w_row, w_data) or None)``; return results per cycle."""
    dut = cls(rows, cols)
    out = []

    async def tb(ctx):
        for t in range(len(events) + dut.LATENCY):
            act, wr = events[t] if t < len(events) else (None, None)
            for k in range(rows):
                ctx.set(dut.act[k], 0 if act is None else int(act[k]))
            ctx.set(dut.w_valid, wr is not None)
            if wr is not None:
                ctx.set(dut.w_row, wr[0])
                for n in range(cols):
                    ctx.set(dut.w_data[n], int(wr[1][n]))
            out.append([ctx.get(dut.result[n]) for n in range(cols)])
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
    return dut.LATENCY, out


def _model(cls, rows, cols, events):
    """The documented rule of each array (SEES_UP_TO)."""
    writes = [(t, wr[0], np.asarray(wr[1])) for t, (_, wr) in enumerate(events) if wr is not None]
    expected = {}
    for c, (act, _) in enumerate(events):
        if act is None:
            continue
        w = np.zeros((rows, cols), dtype=np.int64)
        for t, k, row in writes:
            if t <= SEES_UP_TO[cls](c, k, rows):
                w[k] = row
        expected[c] = np.asarray(act, dtype=np.int64) @ w
    return expected


@pytest.mark.parametrize("cls", ARRAYS)
@pytest.mark.parametrize("rows, cols", [(4, 4), (2, 4), (4, 2)])
def test_tile_then_stream(cls, rows, cols):
    rng = np.random.default_rng(rows * 10 + cols)
    w = rng.integers(-128, 128, (rows, cols))
    w[0, 0] = -128
    a = rng.integers(-128, 128, (12, rows))
    a[0] = -128
    events = [(None, (k, w[k])) for k in range(rows)] + [(row, None) for row in a]
    lat, out = _simulate(cls, rows, cols, events)
    assert lat == rows + cols - (cls is SystolicArray)
    got = np.array([out[rows + i + lat] for i in range(len(a))])
    np.testing.assert_array_equal(got, a @ w)


@pytest.mark.parametrize("cls", ARRAYS)
@pytest.mark.parametrize("rows, cols", [(4, 4), (2, 4), (4, 2)])
def test_interleaved_writes_follow_rule(cls, rows, cols):
    rng = np.random.default_rng(99 + rows + cols)
    events = []
    for _ in range(60):
        act = rng.integers(-128, 128, rows) if rng.random() < 0.7 else None
        wr = (int(rng.integers(0, rows)), rng.integers(-128, 128, cols)) if rng.random() < 0.4 else None
        events.append((act, wr))
    lat, out = _simulate(cls, rows, cols, events)
    expected = _model(cls, rows, cols, events)
    assert len(expected) > 20
    for c, want in expected.items():
        assert out[c + lat] == want.tolist(), f"activation row presented at cycle {c}"


@pytest.mark.parametrize("cls", ARRAYS)
def test_back_to_back_tiles_without_bubble(cls):
    # The compute engine's pattern: weight rows k in cycles P0+k, activations right before and after.
    rows, cols = 4, 4
    rng = np.random.default_rng(5)
    w1, w2 = rng.integers(-128, 128, (2, rows, cols))
    a1, a2 = rng.integers(-128, 128, (2, 6, rows))
    events = ([(None, (k, w1[k])) for k in range(rows)] + [(r, None) for r in a1]
              + [(None, (k, w2[k])) for k in range(rows)] + [(r, None) for r in a2])
    lat, out = _simulate(cls, rows, cols, events)
    got1 = np.array([out[rows + i + lat] for i in range(6)])
    got2 = np.array([out[2 * rows + 6 + i + lat] for i in range(6)])
    np.testing.assert_array_equal(got1, a1 @ w1)
    np.testing.assert_array_equal(got2, a2 @ w2)


@pytest.mark.parametrize("cls", ARRAYS)
@pytest.mark.parametrize("rows, cols", [(3, 4), (4, 1), (128, 4)])
def test_rejects_bad_shape(cls, rows, cols):
    with pytest.raises(ValueError, match="power of two"):
        cls(rows, cols)
