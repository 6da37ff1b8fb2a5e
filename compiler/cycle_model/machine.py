"""The cycle model's machine: dispatcher, queues, sequencers, tokens and engines, in absolute cycles.

It applies the rules of docs/timing.md (and, where the text is short, the Amaranth code
of hw/dispatch.py, hw/sequencer.py, hw/core.py) to the *registered state* of the NPU.
Engines keep absolute times instead of per-cycle counters (a compute command accepted
in ``A`` is ready again at ``A + S`` and done at ``A + S + L + 2``; the DMA engines are
in :mod:`.dma`), so that a cycle in which no register changes is followed by cycles
that are the same until the next timer fires: the loop evaluates only the cycles in
which something happens, and adds the level counters (busy, stalls) of the skipped
cycles in one step. Each evaluated cycle has the RTL's two phases: every decision is
taken from the state at the start of the cycle, then every update is applied.

Functional results come from the reference simulator's per-instruction code
(:data:`npuforge.isa.refsim_units.EXECUTE`), run on a command in the cycle its engine
accepts it: a command's producers were accepted (and were done) before it pops their
tokens, so this order respects every dependency the program declares.
"""

from __future__ import annotations

from collections import deque

from ...hw.counters import COUNTER_NAMES
from ...hw.requant import Requant
from ...isa.refsim_units import MASK32, AddrRangeError, Machine
from ...isa.spec import NUM_REGS, ErrorCode, Opcode
from .dispatch import DispatchMixin
from .dma import LoadTiming, StoreTiming
from .engines import ACTIVITY_NAMES, ComputeTiming, EngineMixin

__all__ = ["simulate_words", "CycleStop", "CycleLimit", "ACTIVITY_NAMES"]

_LEVELS = ("load_busy", "load_token_stall", "compute_busy", "compute_token_stall", "store_busy",
           "store_token_stall", "dispatch_full_stall", "dispatch_fence_stall")
PUSH_SLOTS = 4      # hw/sequencer.py: pushing commands handed over and not yet pushed
_UNIT_PUSH_CHANNELS = ((0,), (1, 2), (3,))      # L2C; C2L, C2S; S2C (isa.spec LEGAL_DEPS, Dep order)
# Producer and consumer unit of each channel (L2C, C2L, C2S, S2C): a token change wakes the far end.
_PRODUCER = (0, 1, 1, 2)
_CONSUMER = (1, 0, 2, 1)


class CycleLimit(RuntimeError):
    """The run did not end within ``max_cycles`` (the model's watchdog, like the RTL's)."""


class CycleStop(Exception):
    """Internal: the run ended (normally or with an error) in cycle ``t``."""


class _Unit:
    """One sequencer (held instruction, pending pushes, outstanding commands) and its queue."""

    __slots__ = ("fifo", "held", "pend", "outstanding", "accepted", "dones_seen", "push_chans", "clean", "obs")

    def __init__(self, push_chans):
        self.fifo = deque()         # (cycle written, Cmd)
        self.held = None
        self.pend = deque()         # (channels, command number, pc) of handed-over pushing commands
        self.outstanding = 0
        self.accepted = 0
        self.dones_seen = 0
        self.push_chans = push_chans
        # A unit that decided to do nothing keeps deciding so until one of its inputs changes
        # (its state, its queue, a token of its channels, its engine); ``obs`` keeps what it
        # showed then: (idle, waiting on a token, the index it waits at).
        self.clean = False
        self.obs = (True, False, 0)


def simulate_words(words, config, dram=None, *, max_cycles: int = 50_000_000, every_cycle: bool = False):
    """Run instruction words on the cycle model; see :func:`npuforge.compiler.cycle_model.simulate`.

    ``every_cycle`` evaluates every cycle one by one (no jumps, no run-ahead): slow, and the
    reference the fast paths are tested against.
    """
    return _Sim(words, config, dram, max_cycles, every_cycle).run()


class _Sim(DispatchMixin, EngineMixin):
    """One run: the registered state of the NPU, advanced by :meth:`cycle` from event to event."""

    def __init__(self, words, config, dram, max_cycles, every_cycle=False):
        self.every_cycle = every_cycle
        self.words = words
        self.cfg = config
        self.m = Machine(config, dram) if dram is not None else None
        self.max_cycles = max_cycles
        self.Dq, self.Dt = config.queue_depth, config.token_depth
        self.B = config.dram_bytes_per_cycle
        self.load = LoadTiming(config)
        self.store = StoreTiming(config, Requant.LATENCY)
        self.comp = ComputeTiming(config)
        self.units = [_Unit(chans) for chans in _UNIT_PUSH_CHANNELS]     # load, compute, store
        self.tokens = [0, 0, 0, 0]
        self.regs = [0] * NUM_REGS
        self.pc = 0
        self.halted = False
        self.disp_next = 0          # the dispatcher runs plain scalars until this cycle
        self.cache = {}
        self.cur = None             # (pc, resolved Cmd or None, why not) of the queue instruction in decode
        self.two_stage_dispatch = config.dispatch_stages == 2
        self.prio_store = False
        self.c = dict.fromkeys(COUNTER_NAMES, 0)
        self.activity = dict.fromkeys(ACTIVITY_NAMES, 0)
        self.lv = [0] * len(_LEVELS)    # level counters up to cycle lv_t - 1
        self.lv_ind = (False,) * len(_LEVELS)   # their indicators in cycle lv_t and after
        self.lv_t = 1
        self.error = ErrorCode.NONE
        self.error_pc = 0
        self.error_msg = ""

    # ---- the run -------------------------------------------------------------------------
    def run(self):
        t = 1
        try:
            while True:
                changed = self.cycle(t)
                if changed or self.every_cycle:
                    t += 1
                    continue
                # Only timers change anything from here: every cycle is the same until the next
                # one fires (the end of the dispatcher's own run of plain scalars is one of them).
                nxt = self.next_timer(t)
                store = self.store
                if store.busy():
                    if self.load.act and self.load.beat:
                        nxt = t + 1         # both engines may want the port: cycle by cycle
                    else:
                        nxt, granted = store.run_ahead(t + 1, nxt if nxt is not None else self.max_cycles + 1)
                        self.units[2].clean = False     # its cmd_ready may have risen
                        if granted:
                            self.prio_store = False
                if nxt is None:
                    raise RuntimeError(f"cycle model: no progress possible after cycle {t} and no "
                                       f"deadlock detected (model error)")
                if nxt > self.max_cycles:
                    raise CycleLimit(f"cycle model: not done after max_cycles={self.max_cycles}")
                t = nxt
        except CycleStop:
            pass
        self.load.catch_up(self.T + 1)
        c = self.c
        for name, total, on in zip(_LEVELS, self.lv, self.lv_ind):
            c[name] = total + on        # the last evaluated cycle is T itself
        c["cycles"] = self.T
        c["dram_read_beats"] = self.load.beats_total
        c["dram_write_beats"] = self.store.beats_total
        return self

    def next_timer(self, t):
        cands = []
        if self.disp_next > t:
            cands.append(self.disp_next)
        comp = self.comp
        if comp.ready_at > t:
            cands.append(comp.ready_at)
        for eng in (comp, self.load, self.store):
            if eng.dones:
                cands.append(eng.dones[0])
        e = self.load.next_event()
        if e is not None:
            cands.append(max(e, t + 1))
        return min(cands) if cands else None

    def cycle(self, t):
        """Evaluate cycle ``t``; return whether cycle ``t + 1`` may differ (else only timers change things)."""
        cfg, units, tokens, Dt = self.cfg, self.units, self.tokens, self.Dt
        load, store, comp = self.load, self.store, self.comp
        changed = False

        # ---- engine outputs at the start of the cycle -------------------------------------
        d0 = d1 = d2 = False
        q = load.dones
        if q and q[0] == t:
            q.popleft()
            d0 = True
        q = comp.dones
        if q and q[0] == t:
            q.popleft()
            d1 = True
        q = store.dones
        if q and q[0] == t:
            q.popleft()
            d2 = True
        done = (d0, d1, d2)
        ready = (load.pend is None, comp.ready_at <= t, store.pend is None)     # cmd_ready of each engine

        # ---- DRAM port ------------------------------------------------------------------------
        lreq = False
        if load.act:
            if load.tk < t:
                load.catch_up(t)
            lreq = load.beat and load.tk <= t
        pipe = store.pipe
        sreq = bool(pipe) and pipe[0][0] <= t and pipe[0][1] > 0
        grant_store = sreq and (not lreq or self.prio_store)
        if lreq or sreq:
            self.prio_store = not grant_store

        # ---- sequencers: decisions from registered state ------------------------------------
        dec = [None, None, None]
        idle_all = True
        waits = None
        stuck_all = True            # every unit idle or waiting on a token
        if comp.ready_at == t:
            units[1].clean = False
        for u in (0, 1, 2):
            un = units[u]
            if un.clean and not done[u]:
                idle, waiting, wpc = un.obs
                if waiting:
                    if waits is None:
                        waits = []
                    waits.append(wpc)
                elif not idle:
                    stuck_all = False
                if not idle:
                    idle_all = False
                continue
            pend, held, fifo = un.pend, un.held, un.fifo
            engine_idle = un.outstanding == 0
            if held is None and not pend and not fifo:
                # Nothing to take, hand over or push (a done only lowers ``outstanding``).
                if not engine_idle:
                    idle_all = stuck_all = False
                elif done[u]:
                    raise AssertionError("done with nothing outstanding")
                un.obs = (engine_idle, False, 0)
                un.clean = not self.every_cycle
                continue
            push_now = False
            push_ok = True
            if pend:
                for ch in pend[0][0]:
                    if tokens[ch] >= Dt:
                        push_ok = False
                push_now = push_ok and pend[0][1] <= un.dones_seen + done[u]
            pops_ok = False
            if held is not None:
                pops_ok = True
                for ch in held.pops:
                    if tokens[ch] == 0:
                        pops_ok = False
            accept = pops_ok and ready[u]
            append = accept and bool(held.pushes)
            head_valid = bool(fifo) and fifo[0][0] < t
            take = False
            if head_valid and (held is None or accept) and not append:
                if not pend or (push_now and len(pend) == 1):
                    take = True
                else:
                    head_push = fifo[0][1].pushes
                    take = not (head_push and len(pend) >= PUSH_SLOTS)
                    if take:
                        for ch in un.push_chans:
                            total = tokens[ch] + (ch in head_push)
                            for e in pend:
                                if ch in e[0]:
                                    total += 1
                            if total > Dt:
                                take = False
                                break
            waiting = engine_idle and ((held is not None and not pops_ok and not pend) or (bool(pend) and not push_ok))
            idle = held is None and not pend and engine_idle and not head_valid
            wpc = 0
            if waiting:
                if waits is None:
                    waits = []
                wpc = pend[0][2] if pend else held.pc
                waits.append(wpc)
            elif not idle:
                stuck_all = False
            if not idle:
                idle_all = False
            un.obs = (idle, waiting, wpc)
            if push_now or accept or take:
                dec[u] = (push_now, accept, append, take, waiting)
            else:
                un.clean = not self.every_cycle

        # ---- dispatcher -------------------------------------------------------------------------
        dispatched = False
        full_stall = fence_stall = False
        halting = False
        disp_stuck = False
        d_error = None
        write = None                # (unit, Cmd)
        new_pc = None
        if not self.halted and t >= self.disp_next:
            pc = self.pc
            if pc >= cfg.imem_words:
                d_error = (ErrorCode.PC_RANGE, f"fetch outside the instruction memory (imem_words={cfg.imem_words})")
            else:
                kind, entry = self.cache.get(pc) or self.decode_at(pc)
                if kind == "scalar":
                    op = entry.op
                    if op == Opcode.FENCE:
                        if idle_all:
                            dispatched, new_pc = True, pc + 1
                        else:
                            fence_stall = disp_stuck = True
                    elif op == Opcode.HALT:
                        dispatched = halting = True
                    elif op == Opcode.DBNZ:
                        rd = entry.args["rd"]
                        val = (self.regs[rd] - 1) & MASK32
                        if rd != 0 and val != 0:
                            target = entry.args["target"]
                            if not 0 <= target < cfg.imem_words:
                                d_error = (ErrorCode.PC_RANGE, f"dbnz: branch target {target} is outside the "
                                                               f"instruction memory")
                            else:
                                new_pc = target
                        else:
                            new_pc = pc + 1
                        if d_error is None:
                            dispatched = True
                    else:
                        dispatched, new_pc = True, pc + 1
                elif kind == "queue":
                    # Its first cycle in decode resolves it; with dispatch_stages: 2 the checks and the
                    # queue write come from the next cycle on (docs/timing.md section 2).
                    cur = self.cur
                    resolving = False
                    if cur is None or cur[0] != pc:
                        try:
                            cmd, why = entry.resolve(self.regs), ""
                        except AddrRangeError as e:
                            cmd, why = None, str(e)
                        self.cur = cur = (pc, cmd, why)
                        resolving = self.two_stage_dispatch
                        changed = changed or resolving
                    if cur[1] is None and not resolving:
                        d_error = (ErrorCode.ADDR_RANGE, cur[2])
                    if d_error is None and not resolving:
                        cmd = cur[1]
                        if len(units[cmd.unit].fifo) < self.Dq:
                            dispatched, new_pc = True, pc + 1
                            write = cmd
                        else:
                            full_stall = disp_stuck = True
                else:
                    d_error = (kind, entry)

        # ---- the core: end of run, errors, deadlock ------------------------------------------
        halt_seen = self.halted or halting
        stop = None
        if d_error is not None:
            stop = (d_error[0], self.pc, d_error[1])
        elif (disp_stuck or halt_seen) and waits and stuck_all:
            if disp_stuck:
                waits.append(self.pc)
            stop = (ErrorCode.DEADLOCK, min(waits), "every unit waits on a token")
        finished = stop is None and halt_seen and idle_all

        # ---- counters: level counters of the cycles since the last evaluated one, then this one --
        lv, prev = self.lv, self.lv_ind
        span = t - self.lv_t
        for i in range(8):
            if prev[i]:
                lv[i] += span
        u0, u1, u2 = units
        self.lv_ind = (u0.outstanding != 0, u0.obs[1], u1.outstanding != 0, u1.obs[1],
                       u2.outstanding != 0, u2.obs[1], full_stall, fence_stall)
        self.lv_t = t
        if dispatched:
            self.c["instructions"] += 1

        # ---- apply: engines' items (the port is granted within the cycle) ------------------------
        if load.act and load.advance(t, lreq and not grant_store):
            units[0].clean = False      # cmd_ready may rise (the pending command started)
        if (pipe or store.items is not None) and store.advance(t, grant_store):
            units[2].clean = False

        # ---- apply: tokens and sequencers -----------------------------------------------------------
        for u in (0, 1, 2):
            un = units[u]
            if done[u]:
                un.dones_seen += 1
                un.outstanding -= 1
                un.clean = False
            if dec[u] is None:
                continue
            un.clean = False
            push_now, accept, append, take, _ = dec[u]
            if push_now:
                for ch in un.pend.popleft()[0]:
                    tokens[ch] += 1
                    far = units[_CONSUMER[ch]]
                    if far.held is not None and ch in far.held.pops:
                        far.clean = False       # only a held command's pops read this token
            if accept:
                cmd = un.held
                for ch in cmd.pops:
                    tokens[ch] -= 1
                    far = units[_PRODUCER[ch]]
                    if far.pend:
                        far.clean = False       # room for its pending pushes (and rule b)
                un.accepted += 1
                if append:
                    un.pend.append((cmd.pushes, un.accepted, cmd.pc))
                self.accept(u, cmd, t)
                un.outstanding += 1
            if take:
                un.held = un.fifo.popleft()[1]
            elif accept:
                un.held = None

        # ---- apply: dispatcher ----------------------------------------------------------------------
        if write is not None:
            un = units[write.unit]
            un.fifo.append((t, write))
            if un.held is None:
                un.clean = False        # a unit holding a command looks at its queue when it hands that over
            self.cur = None
        if dispatched:
            kind, entry = self.cache[self.pc]
            if kind == "scalar":
                op, regs = entry.op, self.regs
                if op == Opcode.SETI:
                    if entry.args["rd"]:
                        regs[entry.args["rd"]] = entry.args["imm"] & MASK32
                elif op == Opcode.ADDI:
                    if entry.args["rd"]:
                        regs[entry.args["rd"]] = (regs[entry.args["rs"]] + entry.args["imm"]) & MASK32
                elif op == Opcode.DBNZ:
                    rd = entry.args["rd"]
                    if rd:
                        regs[rd] = (regs[rd] - 1) & MASK32
            if halting:
                self.halted = True
                changed = True
            else:
                self.pc = new_pc
                if write is not None or entry.op == Opcode.FENCE or self.every_cycle:
                    changed = True
                else:
                    self.disp_next = self.scalar_run(t + 1)

        if stop is not None or finished:
            self.T = t
            if stop is not None:
                self.error, self.error_pc, self.error_msg = stop
            raise CycleStop
        if t >= self.max_cycles:
            raise CycleLimit(f"cycle model: not done after max_cycles={self.max_cycles}")
        # The next cycle can differ from this one only where a unit woke up (its inputs or
        # its state changed) or the dispatcher moved; otherwise only timers change anything.
        return changed or not (units[0].clean and units[1].clean and units[2].clean)

