"""The four dependency-token channels: bounded counters between the units (isa/execution.py).

Channel ``i`` is ``DEP_CHANNELS[i]`` (L2C, C2L, C2S, S2C); each has exactly one
producer unit (it pushes) and one consumer unit (it pops), as ``LEGAL_DEPS`` says.

Timing
------
A counter is a register ``0..token_depth``. ``can_pop``/``can_push`` are read from the
register (``count > 0`` / ``count < token_depth``): a token pushed in cycle t can be
popped in cycle t+1 at the earliest. A pop and a push of the same channel in the same
cycle both happen (the count is unchanged). A request that is not allowed is a
design error of the requester and is ignored (the sequencers never make one).
"""

from amaranth.hdl import Module, Signal
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from ..isa.spec import DEP_CHANNELS, LEGAL_DEPS, Dep, Queue

__all__ = ["Tokens", "CHANNELS", "channel_index", "channel_ends"]

CHANNELS = len(DEP_CHANNELS)


def channel_index(dep: Dep) -> int:
    """Position of a channel in the ``Tokens`` vectors."""
    return DEP_CHANNELS.index(dep)


def channel_ends(dep: Dep) -> tuple[Queue, Queue]:
    """(producer, consumer) unit of a channel, read from ``LEGAL_DEPS``."""
    producer = [q for q, flags in LEGAL_DEPS.items()
                if dep in (flags["push_prev"], flags["push_next"])]
    consumer = [q for q, flags in LEGAL_DEPS.items()
                if dep in (flags["pop_prev"], flags["pop_next"])]
    assert len(producer) == len(consumer) == 1, dep
    return producer[0], consumer[0]


class Tokens(wiring.Component):
    """Token counters.

    Parameters
    ----------
    depth : int
        Capacity of each channel (``config.token_depth``), 1..255.

    Ports
    -----
    pop, push : In(CHANNELS)
        One request bit per channel.
    can_pop, can_push : Out(CHANNELS)
        ``count > 0`` and ``count < depth``, per channel.
    count : Out(ArrayLayout)
        The counters, for observation.
    """

    def __init__(self, depth: int):
        if not (isinstance(depth, int) and 1 <= depth <= 255):
            self._MustUse__silence = True     # a rejected component is not an unused one
            raise ValueError(f"token depth must be an integer in 1..255, not {depth!r}")
        self.depth = depth
        super().__init__({
            "pop": In(CHANNELS),
            "push": In(CHANNELS),
            "can_pop": Out(CHANNELS),
            "can_push": Out(CHANNELS),
            "count": Out(data.ArrayLayout(range(depth + 1), CHANNELS)),
        })

    def elaborate(self, platform):
        m = Module()
        for i in range(CHANNELS):
            count = Signal(range(self.depth + 1), name=f"count_{DEP_CHANNELS[i].name.lower()}")
            can_pop = count != 0
            can_push = count != self.depth
            pop = self.pop[i] & can_pop
            push = self.push[i] & can_push
            m.d.comb += [self.can_pop[i].eq(can_pop), self.can_push[i].eq(can_push),
                         self.count[i].eq(count)]
            with m.If(pop & ~push):
                m.d.sync += count.eq(count - 1)
            with m.Elif(push & ~pop):
                m.d.sync += count.eq(count + 1)
        return m
