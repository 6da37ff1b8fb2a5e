"""Sequencer: token protocol and engine handshake, checked cycle by cycle in a Python harness.

The testbench plays the queue, the token counters (with random producers and consumers
on the other ends) and an engine of fixed latency, and checks the rules of
isa/execution.py and hw/sequencer.py: commands in order, pops taken at acceptance and only
when available, pushes only after every handed-over command is done, nothing taken from
the queue while a push is pending, and the documented timing.
"""

import numpy as np
import pytest
from amaranth.sim import Simulator

from npuforge.hw.dispatch import COMPUTE_ENTRY
from npuforge.hw.interfaces import ComputeCmd
from npuforge.hw.sequencer import Sequencer
from npuforge.hw.tokens import CHANNELS, channel_index
from npuforge.isa.spec import LEGAL_DEPS, Opcode, Queue

FLAGS = {f: channel_index(ch) for f, ch in LEGAL_DEPS[Queue.COMPUTE].items() if ch is not None}


def entry(pc, flags):
    return COMPUTE_ENTRY.const({"cmd": {"op": Opcode.MATMUL, "rows": pc + 1}, "pc": pc,
                                "deps": {f: int(f in flags) for f in FLAGS}})


def run(entries, latency, pipelined, seed, depth=2, p_token=0.3, cycles=600, stop_at=None):
    """Returns the event log: (cycle, kind, pc) for accept / done, (cycle, "push", channels),
    (cycle, "take", pc, token counts after this cycle's pops and pushes)."""
    """``entries``: (pc, flags) pairs in queue order."""
    dut = Sequencer(Queue.COMPUTE, ComputeCmd, depth)
    flags_of = dict(entries)
    entries = [(pc, entry(pc, flags)) for pc, flags in entries]
    rng = np.random.default_rng(seed)
    tokens = [0] * CHANNELS
    log = []

    async def tb(ctx):
        queue = list(entries)
        inflight = []            # (done cycle, pc)
        for cycle in range(cycles):
            ctx.set(dut.stop, int(stop_at is not None and cycle >= stop_at))
            ctx.set(dut.head_valid, int(bool(queue)))
            if queue:
                ctx.set(dut.head, queue[0][1])
            ready = pipelined or not inflight
            ctx.set(dut.engine.cmd_ready, int(ready))
            done = bool(inflight) and inflight[0][0] == cycle
            ctx.set(dut.engine.done, int(done))
            ctx.set(dut.engine.busy, int(bool(inflight)))
            ctx.set(dut.can_pop, sum(1 << i for i in range(CHANNELS) if tokens[i] > 0))
            ctx.set(dut.can_push, sum(1 << i for i in range(CHANNELS) if tokens[i] < depth))
            for i in range(CHANNELS):
                ctx.set(dut.count[i], tokens[i])
            take, valid = ctx.get(dut.head_take), ctx.get(dut.engine.cmd_valid)
            pop, push = ctx.get(dut.pop), ctx.get(dut.push)
            if done:
                log.append((cycle, "done", inflight.pop(0)[1]))
            if valid and ready:
                pc = ctx.get(dut.engine.cmd).rows - 1
                log.append((cycle, "accept", pc))
                flags = flags_of[pc]
                assert pop == sum(1 << FLAGS[f] for f in flags if f.startswith("pop")), (cycle, pc)
                start = max([cycle] + [d for d, _ in inflight])
                inflight.append((start + latency, pc))
            else:
                assert pop == 0
            for i in range(CHANNELS):
                if pop >> i & 1:
                    assert tokens[i] > 0
                    tokens[i] -= 1
                if push >> i & 1:
                    assert tokens[i] < depth
                    tokens[i] += 1
            if push:
                log.append((cycle, "push", push))
            if take:
                log.append((cycle, "take", queue.pop(0)[0], tuple(tokens)))
            # The other ends of the channels: produce pops' tokens, consume pushes' tokens.
            for f, i in FLAGS.items():
                if rng.random() < p_token:
                    if f.startswith("pop") and tokens[i] < depth:
                        tokens[i] += 1
                    elif f.startswith("push") and tokens[i] > 0:
                        tokens[i] -= 1
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
    return log


@pytest.mark.parametrize("latency,pipelined,seed", [(1, True, 0), (4, True, 1), (3, False, 2), (6, True, 3)])
def test_protocol_random(latency, pipelined, seed):
    rng = np.random.default_rng(seed)
    flags_of = {pc: frozenset(f for f in FLAGS if rng.random() < 0.3) for pc in range(40)}
    log = run(list(flags_of.items()), latency, pipelined, seed)
    accepts = [e[2] for e in log if e[1] == "accept"]
    assert accepts == list(range(40)), "every command handed over once, in order"
    pending = []                     # pushing commands handed over, not yet pushed
    finished = set()
    depth = 2
    for event in log:
        cycle, kind, value = event[:3]
        if kind == "done":
            finished.add(value)
        if kind == "accept" and any(f.startswith("push") for f in flags_of[value]):
            pending.append(value)
        elif kind == "push":
            assert pending, f"cycle {cycle}: a push with no pushing command"
            assert pending[0] in finished, f"cycle {cycle}: push of {pending[0]} before its done"
            want = sum(1 << FLAGS[f] for f in flags_of[pending.pop(0)] if f.startswith("push"))
            assert value == want
        elif kind == "take" and pending:
            # Taken early: every pending push and the new one's are sure to find room.
            counts = event[3]
            for f, ch in FLAGS.items():
                if f.startswith("push"):
                    need = sum(f2 == f for pc in pending + [value] for f2 in flags_of[pc])
                    assert counts[ch] + need <= depth, (cycle, value, pending, counts)


def test_back_to_back_without_tokens():
    """No tokens and a pipelined engine: one command per cycle, from 1 cycle after the first take."""
    entries = [(pc, frozenset()) for pc in range(6)]
    log = run(entries, 3, True, 0, cycles=20)
    accepts = [e[0] for e in log if e[1] == "accept"]
    takes = [e[0] for e in log if e[1] == "take"]
    assert takes[0] == 0 and accepts == list(range(1, 7))


def test_push_in_cycle_of_done_next_taken_early_when_room():
    """The push is given in the cycle of its done; the next command, whose pushes are sure to
    find room, is taken one cycle after the pushing one is handed over."""
    entries = [(0, frozenset({"push_next"})), (1, frozenset({"push_next"}))]
    log = run(entries, 4, True, 0, cycles=20, p_token=0.0)
    ev = {(e[1], e[2]): e[0] for e in log if e[1] != "push"}
    push = [e[0] for e in log if e[1] == "push"]
    assert ev[("accept", 0)] == 1 and ev[("done", 0)] == 5
    assert ev[("take", 1)] == 2 and ev[("accept", 1)] == 3
    assert push == [5, 9]       # the harness engine finishes commands latency apart


def test_next_waits_for_push_without_room():
    """token_depth 1: the second pushing command could block, so it waits for the first push."""
    entries = [(0, frozenset({"push_next"})), (1, frozenset({"push_next"}))]
    log = run(entries, 4, True, 0, depth=1, cycles=20, p_token=0.0)
    ev = {(e[1], e[2]): e[0] for e in log if e[1] != "push"}
    push = [e[0] for e in log if e[1] == "push"]
    assert push == [5] and ev[("take", 1)] == 5 and ev[("accept", 1)] == 6


def test_stop_freezes():
    entries = [(pc, frozenset()) for pc in range(10)]
    log = run(entries, 2, True, 0, cycles=30, stop_at=4)
    assert max(e[0] for e in log if e[1] in ("accept", "take")) < 4
