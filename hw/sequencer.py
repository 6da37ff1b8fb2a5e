"""The sequencer in front of each engine: queue head, dependency tokens, engine handshake.

One per unit (load, compute, store). It follows isa/execution.py ("Units and tokens"):

- The unit *holds* one instruction: it takes the head of its queue into a register
  (freeing the queue slot) when it starts on it, before waiting for its pop tokens.
- It offers the held command to the engine when every channel it pops is above 0;
  the pops are taken all at once, in the cycle the engine accepts the command.
- When a command pushes tokens, its pushes are given once the engine has signalled the
  ``done`` of that command (and so of every earlier one), all at once, in the first cycle
  every channel it pushes is below ``token_depth`` (possibly the very cycle of that
  ``done``). Pushes are given in command order.
- Pipelining: the engine may work on several commands at once. The unit takes its next
  instruction (and takes its pops and offers it) while earlier commands are executing
  when either (a) no push is pending after this cycle, or (b) every pending push and the
  new instruction's own pushes are sure to find room: for each channel,
  ``count + pending pushes + the head's push <= token_depth`` (only this unit pushes that
  channel, so the room cannot disappear), with at most ``PUSH_SLOTS`` pending pushes.
  It never takes the head in the cycle it hands over a pushing command.
  Both cases are equivalent to the one-at-a-time model of isa/execution.py: a command
  that pushes nothing changes no counter when it completes, and a push that is sure to
  succeed will happen whatever the other units do, so completing a command, giving its
  (certain) pushes and starting the next one commute. When the machine is dead, every
  engine has finished and every certain push is given, and the unit holds exactly the
  instruction the model holds (a push that can block is never overtaken: case (b) fails
  for it).

Timing
------
- Queue head to held register: 1 cycle (an entry written by the dispatcher in cycle t is
  taken in t+1, held from t+2 and offered to the engine from t+2).
- Back to back: in the cycle the engine accepts a command, the next head is taken if the
  rules above allow (not if the accepted command pushes: then in the next cycle at the
  earliest), so the engine can accept one command per cycle.
- A push is given in the cycle of its command's ``done`` if the counters have room, else in
  the first cycle they do; the consumer sees the token one cycle later.
- When the take waits for a pending push (case (a)), the head is taken in the cycle the
  push is given and offered in the next.
- A held command waiting on a pop token sees a token pushed in cycle t in cycle t+1 and
  is offered in cycle t+1.

Observation (for performance counters and deadlock detection)
------------------------------------------------------------
``busy``: the engine has an accepted command not yet done. ``token_wait``: with the
engine idle, the oldest pending push waits for room, or (no push pending) the held
command waits on a pop token; ``wait_pc`` is that instruction's index. ``idle``: nothing
held, nothing pending, engine idle and queue empty.
"""

from amaranth.hdl import Cat, Module, Mux, Signal
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from ..isa.spec import LEGAL_DEPS, Queue
from .dispatch import queue_entry_layout
from .interfaces import PC_BITS, engine_signature
from .tokens import CHANNELS, channel_index

__all__ = ["Sequencer", "OUTSTANDING_BITS", "PUSH_SLOTS"]

OUTSTANDING_BITS = 8   # commands an engine may hold at once (accepted, not yet done): at most 255
PUSH_SLOTS = 4         # pushing commands handed over and not yet pushed


class Sequencer(wiring.Component):
    """Token pop / push and engine handshake for one unit.

    Parameters
    ----------
    queue : Queue
        LOAD, COMPUTE or STORE: which flags mean which channel (``LEGAL_DEPS``).
    cmd_layout : DmaCmd or ComputeCmd
    token_depth : int
        ``config.token_depth``.

    Ports
    -----
    head, head_valid : In
        The queue's first entry (``queue_entry_layout(cmd_layout)``) and ``level != 0``.
    head_take : Out(1)
        Dequeue the head this cycle.
    engine : Out(engine_signature(cmd_layout)).flip()
        Drives the engine's ``cmd``/``cmd_valid``, reads ``cmd_ready``/``done``/``busy``.
    can_pop, can_push, count : In
        From :class:`~npuforge.hw.tokens.Tokens`.
    pop, push : Out(CHANNELS)
        Token requests (only on this unit's channels).
    stop : In(1)
        The core has latched an error: hand over nothing more, push nothing more.
    accepted : Out(1)
        The engine accepted ``engine.cmd`` this cycle.
    busy, token_wait, wait_pc, idle : Out
        See the module docstring.
    """

    def __init__(self, queue: Queue, cmd_layout, token_depth: int):
        if queue not in (Queue.LOAD, Queue.COMPUTE, Queue.STORE):
            raise ValueError(f"queue must be LOAD, COMPUTE or STORE, not {queue!r}")
        if not (isinstance(token_depth, int) and 1 <= token_depth <= 255):
            raise ValueError(f"token_depth must be an integer in 1..255, not {token_depth!r}")
        self.queue = queue
        self.token_depth = token_depth
        self.entry_layout = queue_entry_layout(cmd_layout)
        super().__init__({
            "head": In(self.entry_layout),
            "head_valid": In(1),
            "head_take": Out(1),
            "engine": Out(engine_signature(cmd_layout).flip()),
            "can_pop": In(CHANNELS),
            "can_push": In(CHANNELS),
            "count": In(data.ArrayLayout(range(token_depth + 1), CHANNELS)),
            "pop": Out(CHANNELS),
            "push": Out(CHANNELS),
            "stop": In(1),
            "accepted": Out(1),
            "busy": Out(1),
            "token_wait": Out(1),
            "wait_pc": Out(PC_BITS),
            "idle": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        legal = LEGAL_DEPS[self.queue]
        pop_flags = {f: channel_index(legal[f]) for f in ("pop_prev", "pop_next") if legal[f] is not None}
        push_flags = {f: channel_index(legal[f]) for f in ("push_prev", "push_next") if legal[f] is not None}
        P = PUSH_SLOTS
        eng = self.engine
        done = eng.done

        held = Signal(self.entry_layout)
        held_valid = Signal()
        outstanding = Signal(OUTSTANDING_BITS)
        # Pending pushes, oldest first: flags, instruction index, and how many engine dones
        # are still needed before it may be given (its own command's done included).
        pv = [Signal(name=f"pend{i}_valid") for i in range(P)]
        pf = [Signal(CHANNELS, name=f"pend{i}_flags") for i in range(P)]
        ppc = [Signal(PC_BITS, name=f"pend{i}_pc") for i in range(P)]
        prem = [Signal(OUTSTANDING_BITS, name=f"pend{i}_rem") for i in range(P)]

        def flags_of(entry, names):
            v = Signal(CHANNELS)
            for f, ch in names.items():
                m.d.comb += v[ch].eq(getattr(entry.deps, f))
            return v

        need_pop = flags_of(held, pop_flags)
        held_push = flags_of(held, push_flags)
        head_push = flags_of(self.head, push_flags)
        pops_ok = (need_pop & ~self.can_pop) == 0

        # ---- pushes ----------------------------------------------------------------------
        head_ready = pv[0] & ((prem[0] == 0) | ((prem[0] == 1) & done))
        push_ok = (pf[0] & ~self.can_push) == 0
        push_now = Signal()
        m.d.comb += push_now.eq(head_ready & push_ok & ~self.stop)
        with m.If(push_now):
            m.d.comb += self.push.eq(pf[0])

        # ---- offer / accept ----------------------------------------------------------------
        offer = Signal()
        accept = Signal()
        m.d.comb += [offer.eq(held_valid & pops_ok & ~self.stop),
                     eng.cmd.eq(held.cmd), eng.cmd_valid.eq(offer), accept.eq(offer & eng.cmd_ready),
                     self.accepted.eq(accept)]
        with m.If(accept):
            m.d.comb += self.pop.eq(need_pop)
        with m.If(accept & ~done):
            m.d.sync += outstanding.eq(outstanding + 1)
        with m.Elif(~accept & done):
            m.d.sync += outstanding.eq(outstanding - 1)

        # ---- pending-push list: shift out the given push, count dones, append the accepted --
        append = accept & held_push.any()
        new_rem = Signal(OUTSTANDING_BITS)
        m.d.comb += new_rem.eq(outstanding + 1 - done)
        after_v = []
        for i in range(P):
            src = i + 1
            v = Signal(name=f"pend{i}_v_after")
            f = Signal(CHANNELS, name=f"pend{i}_f_after")
            pc = Signal(PC_BITS, name=f"pend{i}_pc_after")
            rem = Signal(OUTSTANDING_BITS, name=f"pend{i}_rem_after")
            if src < P:
                m.d.comb += [v.eq(Mux(push_now, pv[src], pv[i])), f.eq(Mux(push_now, pf[src], pf[i])),
                             pc.eq(Mux(push_now, ppc[src], ppc[i])), rem.eq(Mux(push_now, prem[src], prem[i]))]
            else:
                m.d.comb += [v.eq(pv[i] & ~push_now), f.eq(pf[i]), pc.eq(ppc[i]), rem.eq(prem[i])]
            after_v.append(v)
            here = append & ~v & (after_v[i - 1] if i else 1)
            m.d.sync += [pv[i].eq(v | here),
                         pf[i].eq(Mux(here, held_push, f)),
                         ppc[i].eq(Mux(here, held.pc, pc)),
                         prem[i].eq(Mux(here, new_rem, rem - (done & (rem != 0))))]

        # ---- take the next instruction ------------------------------------------------------
        # With no push pending after this cycle the unit starts on the head, as the model does.
        # With pushes pending it may start early only when every pending push, and the head's
        # own, is sure to find room: only this unit pushes those channels, so room now is room
        # later, and the model's outcome (deadlock included) cannot change.
        pend_cnt_ok = []
        for ch in range(CHANNELS):
            total = self.count[ch] + sum(pf[i][ch] & pv[i] for i in range(P)) + head_push[ch]
            pend_cnt_ok.append(total <= self.token_depth)
        guaranteed = Signal()
        m.d.comb += guaranteed.eq(Cat(*pend_cnt_ok).all() & (~head_push.any() | ~pv[P - 1]))
        empty_after = ~pv[0] | (push_now & ~pv[1])
        slot_free = ~held_valid | accept
        take = Signal()
        m.d.comb += take.eq(slot_free & self.head_valid & ~self.stop & ~append
                            & (empty_after | guaranteed))
        m.d.comb += self.head_take.eq(take)
        with m.If(take):
            m.d.sync += [held.eq(self.head), held_valid.eq(1)]
        with m.Elif(accept):
            m.d.sync += held_valid.eq(0)

        # ---- observation ---------------------------------------------------------------------
        engine_idle = outstanding == 0
        wait_pop = held_valid & ~pops_ok & engine_idle & ~pv[0]
        wait_push = pv[0] & engine_idle & ~push_ok
        m.d.comb += [
            self.busy.eq(~engine_idle),
            self.token_wait.eq(wait_pop | wait_push),
            self.wait_pc.eq(Mux(pv[0], ppc[0], held.pc)),
            self.idle.eq(~held_valid & ~pv[0] & engine_idle & ~self.head_valid),
        ]
        return m
