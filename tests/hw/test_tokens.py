"""Token counters against a Python model: random pops and pushes, bounds, simultaneous requests."""

import numpy as np
import pytest
from amaranth.sim import Simulator

from npuforge.hw.tokens import CHANNELS, Tokens, channel_ends, channel_index
from npuforge.isa.spec import DEP_CHANNELS, Dep, Queue


def test_channel_ends_follow_legal_deps():
    assert channel_ends(Dep.L2C) == (Queue.LOAD, Queue.COMPUTE)
    assert channel_ends(Dep.S2C) == (Queue.STORE, Queue.COMPUTE)
    assert [channel_index(d) for d in DEP_CHANNELS] == list(range(CHANNELS))


@pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")
@pytest.mark.parametrize("bad", [0, 256, "8"])
def test_depth_validated(bad):
    with pytest.raises(ValueError, match="token depth"):
        Tokens(bad)


@pytest.mark.parametrize("depth,seed", [(1, 0), (3, 1), (8, 2)])
def test_random_against_model(depth, seed):
    dut = Tokens(depth)
    rng = np.random.default_rng(seed)
    model = [0] * CHANNELS

    async def tb(ctx):
        for _ in range(300):
            pop = int(rng.integers(0, 1 << CHANNELS))
            push = int(rng.integers(0, 1 << CHANNELS))
            ctx.set(dut.pop, pop)
            ctx.set(dut.push, push)
            can_pop, can_push = ctx.get(dut.can_pop), ctx.get(dut.can_push)
            for i in range(CHANNELS):
                assert ctx.get(dut.count[i]) == model[i]
                assert (can_pop >> i & 1) == (model[i] > 0)
                assert (can_push >> i & 1) == (model[i] < depth)
            for i in range(CHANNELS):
                p = (pop >> i & 1) and model[i] > 0
                q = (push >> i & 1) and model[i] < depth
                model[i] += int(q) - int(p)
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
