"""The two DMA engines and their shared DRAM port, as the cycle model sees them.

Each engine is described by *items* (docs/timing.md sections 5 to 7): the load
generator issues one item per cycle (a DRAM read beat, a zero row or a marker), a
beat only when the port grants it; the store reader issues one item per cycle (a row
or a marker) while it has credits, and the beat stage sends each row's beats one per
granted cycle. Rows never matter for timing, only item counts and beats per item.

The engines keep absolute cycle numbers rather than per-cycle counters, so that the
machine (:mod:`.machine`) can jump over cycles in which nothing happens:

- a load command uncontended on the port issues its items back to back, so its
  progress is a function of time (``k`` items issued before cycle ``tk``);
- a store pipeline is a queue of items with the cycle each reaches the beat stage.

Only cycles in which both engines want the port (round-robin arbitration, section 7)
or in which an engine changes state are evaluated one by one. The machine reads the
engines' registers directly in its hot loop: ``cmd_ready`` is ``pend is None``; the load
requests the port in ``t`` when ``act and beat and tk <= t``, the store when its pipeline
head has arrived (``pipe[0][0] <= t``) and has beats.
"""

from __future__ import annotations

from collections import deque

from ...isa.spec import BY_OPCODE

__all__ = ["LoadTiming", "StoreTiming", "dma_items", "row_beats"]


def row_beats(addr: int, nbytes: int, beat: int) -> int:
    """DRAM beats the bytes ``[addr, addr + nbytes)`` touch (``nbytes > 0``)."""
    return (addr % beat + nbytes - 1) // beat + 1


def dma_items(cmd, beat: int, load: bool) -> tuple[int, list[int] | None]:
    """Items of a resolved load / store command.

    Returns
    -------
    (count, beats)
        ``beats`` is None when no item moves DRAM data (zero rows, markers), else the
        beats of each item: one per beat for a load (``count`` = total beats, ``beats``
        is then ``[total]``), one per row for a store.
    """
    if cmd.rows == 0:
        return 1, None
    nbytes = cmd.len * BY_OPCODE[cmd.op].elem_bytes
    if nbytes == 0:
        return (cmd.rows if load else 1), None
    a, stride, rows = cmd.dram, cmd.stride, cmd.rows
    if stride % beat == 0:
        # Every row starts at the same offset within a beat: the common, aligned case.
        per_row = row_beats(a, nbytes, beat)
        if load:
            return per_row * rows, [per_row * rows]
        return rows, [per_row] * rows
    per = [row_beats(a + i * stride, nbytes, beat) for i in range(rows)]
    if load:
        total = sum(per)
        return total, [total]
    return rows, per


class LoadTiming:
    """The load engine: pending slot, generator and writer (hw/dma_load.py)."""

    __slots__ = ("B", "L", "pend", "act", "k", "n", "beat", "tk", "p_prev", "dones", "beats_total", "last_grant")

    def __init__(self, config):
        self.B, self.L = config.dram_bytes_per_cycle, config.dram_latency
        self.pend = None            # (items, is_beat) waiting for the generator
        self.act = False            # the generator works on a command
        self.k = 0                  # items of the active command issued before cycle tk
        self.n = 0
        self.beat = False
        self.tk = 0
        self.p_prev = -1            # writer cycle of the last item handled
        self.dones = deque()        # cycles in which ``done`` is high, ascending
        self.beats_total = 0        # read beats granted (cycles < now)
        self.last_grant = -1

    def catch_up(self, t: int) -> None:
        """Account for the items issued uncontended in cycles ``tk .. t-1``."""
        if self.act and self.tk < t:
            done = t - self.tk
            if self.beat:
                self.beats_total += done
                self.last_grant = t - 1
            self.k += done
            self.tk = t

    def next_event(self) -> int | None:
        """Cycle of the generator's last item (its finish) while it runs uncontended."""
        if not self.act:
            return None
        return self.tk + self.n - self.k - 1

    def advance(self, t: int, granted: bool) -> bool:
        """Cycle ``t``: issue an item if it may; return whether the state changed."""
        if not self.act or self.tk > t:
            return False
        if self.beat and not granted:
            self.tk = t + 1         # denied: nothing issued in t
            return False
        self.k += 1
        self.tk = t + 1
        if self.beat:
            self.beats_total += 1
            self.last_grant = t
        if self.k == self.n:
            self._finish(t)
            return True
        # Uncontended items go on one per cycle without a change the machine must look at:
        # next_event() gives the finish, and catch_up() accounts for the items in between.
        return False

    def _finish(self, t: int) -> None:
        # Writer: item j handled in p_j = max(r_j, p_{j-1} + 1); for a command whose items are
        # all beats (granted in strictly increasing cycles, the last in g) or all zero rows
        # issued back to back from s, the last p is max(p_prev + n, g + L + 1) or max(p_prev + n, s + n).
        n = self.n
        last = (self.last_grant + self.L + 1) if self.beat else t + 1
        p = max(self.p_prev + n, last)
        self.p_prev = p
        self.dones.append(p + 1)
        self.act = False
        if self.pend is not None:
            self._start(self.pend, t + 1)
            self.pend = None

    def _start(self, job, s: int) -> None:
        self.n, self.beat = job
        self.k, self.tk, self.act = 0, s, True

    def accept(self, job, t: int) -> None:
        """The engine accepts a command in cycle ``t`` (after :meth:`advance` for ``t``)."""
        if self.act:
            self.pend = job
        else:
            self._start(job, t + 1)


class StoreTiming:
    """The store engine: pending slot, reader with credits, requantiser pipeline, beat stage (hw/dma_store.py)."""

    __slots__ = ("D", "delay", "pend", "items", "idx", "start", "inflight", "pipe", "kb", "dones", "beats_total")

    def __init__(self, config, requant_latency: int):
        self.D = requant_latency + 4
        self.delay = requant_latency + 2
        self.pend = None            # list of beats per item (0: marker)
        self.items = None           # the reader's active command
        self.idx = 0
        self.start = 0
        self.inflight = 0           # items issued and not yet out of the beat stage
        self.pipe = deque()         # [cycle it reaches the beat stage, beats, last]
        self.kb = 0                 # beats of the head item already sent
        self.dones = deque()
        self.beats_total = 0

    def busy(self) -> bool:
        """Whether the reader or the pipeline still has work (``dones`` aside)."""
        return self.items is not None or bool(self.pipe)

    def advance(self, t: int, granted: bool) -> bool:
        """Cycle ``t`` (``granted``: the port takes the head's beat). True when the pending slot
        emptied (``cmd_ready`` rises in ``t + 1``), the one change the rest of the machine sees
        other than ``done`` (queued in :attr:`dones`)."""
        item_end = False
        pipe = self.pipe
        if pipe and pipe[0][0] <= t:
            head = pipe[0]
            if head[1] == 0:
                item_end = True
            elif granted:
                self.beats_total += 1
                self.kb += 1
                if self.kb == head[1]:
                    item_end = True
                    self.kb = 0
            if item_end:
                pipe.popleft()
                if head[2]:
                    self.dones.append(t + 1)
        started = False
        if self.items is not None and self.start <= t and self.inflight < self.D:
            items = self.items
            self.idx += 1
            last = self.idx == len(items)
            pipe.append([t + self.delay, items[self.idx - 1], last])
            self.inflight += 1
            if last:
                self.items = None
                if self.pend is not None:
                    self._start(self.pend, t + 1)
                    self.pend = None
                    started = True
        if item_end:
            self.inflight -= 1
        return started

    def run_ahead(self, t: int, until: int) -> tuple[int, bool]:
        """Step cycles ``t .. until-1`` with the port to itself (the load engine does not request).

        Stops after a cycle in which ``cmd_ready`` rose or a ``done`` was queued, so that the
        machine evaluates the cycle that sees it. Returns (first cycle not stepped, whether
        any beat was granted).
        """
        beats0 = self.beats_total
        dones = self.dones
        while t < until and (self.items is not None or self.pipe):
            n = len(dones)
            pipe = self.pipe
            if self.items is None and pipe and pipe[0][0] > t:
                t = min(pipe[0][0], until)      # nothing happens before the next item arrives
                continue
            head = pipe[0] if pipe else None
            started = self.advance(t, head is not None and head[0] <= t and head[1] > 0)
            t += 1
            if started or len(dones) != n:
                break
        return t, self.beats_total != beats0

    def _start(self, items, s: int) -> None:
        self.items, self.idx, self.start = items, 0, s

    def accept(self, items, t: int) -> None:
        if self.items is not None:
            self.pend = items
        else:
            self._start(items, t + 1)
