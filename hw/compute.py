"""The compute engine: PRELOAD, MATMUL and the vector instructions on a systolic array.

Ports (``ComputeEngine(config)``)
---------------------------------
- The engine handshake of :func:`~npuforge.hw.interfaces.engine_signature` with
  :class:`~npuforge.hw.interfaces.ComputeCmd`: ``cmd``, ``cmd_valid``, ``cmd_ready``, ``done``, ``busy``.
- ``spad``: scratchpad read port (``8 * spad_row_bytes`` data bits). Activation rows use
  lanes ``0..rows-1``, weight rows lanes ``0..cols-1``.
- ``acc_rd_a`` (reads ``acc[dst+i]``), ``acc_rd_b`` (reads ``acc[src+i]``), ``acc_wr``:
  accumulator ports (``32 * cols`` data bits). Read data is used in the cycle after ``en``
  (two cycles after with ``acc_read_latency=2``, below).

Microarchitecture
-----------------
Every command becomes a run of *slots*, one per cycle, issued back to back by the
front end; a slot is one scratchpad row read (PRELOAD, MATMUL) or one accumulator
row operation (vector instructions), and every slot then walks the same fixed pipeline:

    cycle s            front end: slot issued, scratchpad read (PRELOAD, MATMUL)
    s + 1              scratchpad data: weight row into the array, or activation row into the array
    s + L              back end R: accumulator reads acc_rd_a = dst+i, acc_rd_b = src+i
    s + L + 1          back end X: array result (MATMUL) and read data meet in the vector unit
    s + L + 2          back end W: accumulator write of the row; ``done`` with a command's last slot

(``R = config.rows``, ``C = config.cols``; ``L`` is the array's latency: ``R + C - 1`` for
``dataflow: weight_stationary`` (:mod:`npuforge.hw.array`), ``R + C`` for
``output_stationary`` (:mod:`npuforge.hw.array_os`); see :func:`array_latency`.)
Sequential semantics across commands hold by construction: slots reach every point of
the pipeline in issue order, one per cycle. In the array, weight rows travel the same
diagonal wavefront as activation rows, so a PRELOAD's rows land between the last
activation of the previous tile and the first activation of the next one: no shadow
buffer and no bubble.
In the back end, an accumulator read can miss only the writes of the two slots just
ahead of it (one is being written this cycle, one was written in the cycle of the read);
those two rows are forwarded from the write stage, so the memory's read-during-write
behaviour does not matter, and no hazard ever stalls.

``vector_stages: 2`` (for FPGA clock rates) splits X into X1 (forwarding, every op but
VQUANT, and VQUANT's 32x32 product, all registered) and X2 (VQUANT's rounding shift and
saturation), so W is ``s + L + 3``. Three rows are forwarded (the slot in X2, the one in W,
the one written a cycle before). A VQUANT result is not ready for the slot right behind it,
so the front end holds a slot for one cycle (a *bubble*) when the slot issued in the cycle
before is a working VQUANT slot and this slot reads the row it writes
(:func:`vquant_bubbles`): the timing depends on the rows a program names, never on data.

``acc_read_latency=2`` (an accumulator whose reads take two cycles, the FPGA datapath's): the
reads leave a cycle before R, from the slot delay line, so the data still meets the slot in X;
such a read also misses the write of the cycle before R, and that row is forwarded too. Every
cycle of the timing below is the same.

Timing (all fixed; a function of the command sequence only)
-------------------------------------------------------------
Slots of a command: ``S = R`` for PRELOAD (whatever its ``rows`` field), ``S = max(rows, 1)``
for MATMUL and the vector instructions (``rows = 0``: one empty slot, nothing touched).

- ``cmd_ready`` is high when the front end is idle or issuing the last slot of its command
  (not when that slot waits in a bubble).
- A command accepted in cycle ``A`` issues its slots in cycles ``A+1 .. A+S``; ``cmd_ready``
  is high again in cycle ``A+S`` (so with ``cmd_valid`` held high the next command is
  accepted in ``A+S`` and the slot stream has no gap).
- ``done`` is high in cycle ``A + S + L + 2`` (the write cycle of the last slot):
  ``A + S + R + C + 1`` weight-stationary, ``A + S + R + C + 2`` output-stationary;
  one cycle later with ``vector_stages: 2``, where the bubbles of :func:`vquant_bubbles`
  also add to ``S``.
- ``busy`` is high from cycle ``A+1`` through the cycle of the last outstanding ``done``.

Consequences: back-to-back commands cost ``S`` cycles each; a PRELOAD + MATMUL(n) pair costs
``R + n`` cycles in steady state (utilisation ``n / (R + n)``) with either dataflow; a lone
command takes ``S + L + 2`` cycles from acceptance to ``done``.

Commands arrive checked (isa/execution.py): rows in range, absolute addresses. An opcode
that is not a compute opcode (the dispatcher never sends one) takes ``max(rows, 1)``
empty slots, touches nothing and signals ``done`` like the others.
"""

from amaranth.hdl import Module, Mux, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import Out

from ..isa.spec import Opcode
from ..config import HwConfig
from .array import SystolicArray
from .array_os import OutputStationaryArray
from .interfaces import ROW_ADDR_BITS, ComputeCmd, engine_signature, read_port_signature, write_port_signature
from .vector import VectorUnit

__all__ = ["ComputeEngine", "compute_timing", "vquant_bubbles", "array_latency"]

_ARRAYS = {"weight_stationary": SystolicArray, "output_stationary": OutputStationaryArray}


class _Slot(data.Struct):
    """What one slot carries down the pipeline."""
    valid: 1            # a slot of some command
    last: 1             # the command's last slot: ``done`` when it is written
    work: 1             # reads/writes memory (false for the empty slot of rows = 0)
    op: Opcode
    dst: ROW_ADDR_BITS
    src: ROW_ADDR_BITS
    accumulate: 1
    mult: signed(32)
    shift: 6
    zp: signed(8)
    relu: 1


_VECTOR_OPS = (Opcode.VADD, Opcode.VMAX, Opcode.VRELU, Opcode.VQUANT)
_WRITING_OPS = (Opcode.MATMUL,) + _VECTOR_OPS
_DST_READERS = (Opcode.VADD, Opcode.VMAX)       # read acc[dst+i] (and MATMUL when it accumulates)


def _reads(slot):
    """(reads acc[dst+i], reads acc[src+i]) of a slot: the engine's accumulator read enables."""
    return (_in(slot.op, _DST_READERS) | ((slot.op == Opcode.MATMUL) & slot.accumulate),
            _in(slot.op, _VECTOR_OPS))


def compute_timing(config: HwConfig, op: Opcode, rows: int) -> tuple[int, int]:
    """The documented timing of one command without bubbles, from its acceptance cycle ``A``.

    Parameters
    ----------
    config : HwConfig
    op : Opcode
        A compute opcode.
    rows : int
        The command's ``rows`` field.

    Returns
    -------
    (slots, done) : tuple of int
        ``cmd_ready`` is high again at ``A + slots``; ``done`` is high at ``A + done``. Bubbles
        (:func:`vquant_bubbles`) add to both.
    """
    slots = config.rows if op == Opcode.PRELOAD else max(rows, 1)
    return slots, slots + array_latency(config) + 1 + config.vector_stages


def vquant_bubbles(config: HwConfig, op: Opcode, rows: int, src: int, dst: int, accumulate: bool,
                   quant_row: int | None) -> tuple[int, int | None]:
    """The bubbles the front end puts into one command's slots (``vector_stages: 2`` only).

    A slot is held one cycle when the slot issued in the cycle before it is a working VQUANT
    slot and it reads the row that slot writes.

    Parameters
    ----------
    config : HwConfig
    op, rows, src, dst, accumulate
        The command's fields (absolute, checked addresses).
    quant_row : int or None
        The row written by the slot issued in the cycle before this command's first slot, if
        that is a working VQUANT slot (the previous command's last slot, accepted back to back).

    Returns
    -------
    (bubbles, last_quant_row) : tuple
        Cycles added to the command's slots; the row its last slot writes if that is a
        VQUANT slot (else None).
    """
    if config.vector_stages == 1 or op == Opcode.PRELOAD or rows == 0:
        return 0, None
    reads = set()
    if op in _DST_READERS or (op == Opcode.MATMUL and accumulate):
        reads.add(dst)
    if op in _VECTOR_OPS:
        reads.add(src)
    bubbles = int(quant_row in reads)
    if op != Opcode.VQUANT:
        return bubbles, None
    # Slot i reads src + i and slot i - 1 wrote dst + i - 1.
    return bubbles + (rows - 1) * (src + 1 == dst), dst + rows - 1


def array_latency(config: HwConfig) -> int:
    """The array's latency ``L`` for the config's dataflow.

    Parameters
    ----------
    config : HwConfig

    Returns
    -------
    int
        ``rows + cols - 1`` (weight-stationary) or ``rows + cols`` (output-stationary).
    """
    return config.rows + config.cols - (config.dataflow == "weight_stationary")


def _in(value, ops):
    """``value`` equals one of ``ops``."""
    result = 0
    for op in ops:
        result = result | (value == op)
    return result


class ComputeEngine(wiring.Component):
    """Executes PRELOAD, MATMUL, VADD, VMAX, VRELU and VQUANT (see the module docstring).

    Parameters
    ----------
    config : HwConfig
        The design point: ``rows``, ``cols``, ``spad_row_bytes`` and ``dataflow`` are read.
    acc_read_latency : int
        Cycles from an accumulator read's ``en`` to its data: 1 (the memory ports of
        :mod:`npuforge.hw.interfaces`) or 2 (an :class:`~npuforge.hw.memories.Accumulator` with
        ``compute_read_latency=2``, as the FPGA datapath builds). With 2 the engine reads a cycle
        earlier and forwards one more row; its timing is the same.

    Raises
    ------
    TypeError
        If ``config`` is not a :class:`HwConfig`.
    ValueError
        If ``config.dataflow`` is not one the engine has an array for, or ``acc_read_latency``
        is not 1 or 2.
    """

    def __new__(cls, *args, **kwargs):
        cls._check(*args, **kwargs)  # before the object exists: a rejected one must not warn "never elaborated"
        return super().__new__(cls)

    @staticmethod
    def _check(config, acc_read_latency=1):
        if not isinstance(config, HwConfig):
            raise TypeError(f"ComputeEngine needs a HwConfig, not {type(config).__name__}")
        if acc_read_latency not in (1, 2):
            raise ValueError(f"ComputeEngine: acc_read_latency must be 1 or 2, not {acc_read_latency!r}")
        if config.dataflow not in _ARRAYS:
            raise ValueError(f"ComputeEngine: dataflow must be one of {', '.join(map(repr, _ARRAYS))}, "
                             f"not {config.dataflow!r} (config {config.name!r})")

    def __init__(self, config: HwConfig, acc_read_latency: int = 1):
        self.config = config
        self.acc_read_latency = acc_read_latency
        self.rows, self.cols = config.rows, config.cols
        self.stages = config.vector_stages
        # Slot s reaches back-end stage R after this many cycles (scratchpad read + array latency - 1).
        self.r_delay = array_latency(config)
        members = dict(engine_signature(ComputeCmd).members)
        members.update({
            "spad": Out(read_port_signature(ROW_ADDR_BITS, 8 * config.spad_row_bytes)),
            "acc_rd_a": Out(read_port_signature(ROW_ADDR_BITS, 32 * config.cols)),
            "acc_rd_b": Out(read_port_signature(ROW_ADDR_BITS, 32 * config.cols)),
            "acc_wr": Out(write_port_signature(ROW_ADDR_BITS, 32 * config.cols)),
        })
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        rows, cols = self.rows, self.cols
        m.submodules.array = array = _ARRAYS[self.config.dataflow](rows, cols)
        assert array.LATENCY == self.r_delay
        m.submodules.vector = vec = VectorUnit(cols, latency=self.stages - 1)

        # ---- front end: one slot per cycle (a bubble before a slot that needs a VQUANT row) --------
        cur = Signal(ComputeCmd)
        left = Signal(17)               # slots still to issue for `cur`
        idx = Signal(16)                # row index of the next slot
        pending = Signal()              # a slot is due this cycle
        bubble = Signal()               # ... but it reads the row the VQUANT slot of the last cycle writes
        issuing = Signal()
        m.d.comb += [
            pending.eq(left != 0),
            issuing.eq(pending & ~bubble),
            self.cmd_ready.eq((left == 0) | ((left == 1) & ~bubble)),
        ]
        cmd = self.cmd
        n_slots = Mux(cmd.op == Opcode.PRELOAD, rows, Mux(cmd.rows == 0, 1, cmd.rows))
        accept = Signal()
        m.d.comb += accept.eq(self.cmd_valid & self.cmd_ready)
        with m.If(accept):
            m.d.sync += [cur.eq(cmd), left.eq(n_slots), idx.eq(0)]
        with m.Elif(issuing):
            m.d.sync += [left.eq(left - 1), idx.eq(idx + 1)]

        slot = Signal(_Slot)
        is_preload = cur.op == Opcode.PRELOAD
        m.d.comb += [
            slot.valid.eq(issuing),
            slot.last.eq(left == 1),
            slot.work.eq(is_preload | (cur.rows != 0)),
            slot.op.eq(cur.op),
            slot.dst.eq(cur.dst + idx),
            slot.src.eq(cur.src + idx),
            slot.accumulate.eq(cur.accumulate),
            slot.mult.eq(cur.mult), slot.shift.eq(cur.shift), slot.zp.eq(cur.zp), slot.relu.eq(cur.relu),
            self.spad.addr.eq(slot.src),
            self.spad.en.eq(issuing & slot.work & (is_preload | (cur.op == Opcode.MATMUL))),
        ]
        if self.stages == 2:
            # The requantiser's result is ready one stage later than the others: the slot right behind
            # a VQUANT slot must not read the row it writes (see vquant_bubbles).
            quant_row = Signal(ROW_ADDR_BITS)
            quant_last = Signal()       # the slot issued in the last cycle is a working VQUANT slot
            m.d.sync += [quant_last.eq(issuing & slot.work & (slot.op == Opcode.VQUANT)), quant_row.eq(slot.dst)]
            reads_a, reads_b = _reads(slot)
            m.d.comb += bubble.eq(pending & slot.work & quant_last
                                  & ((reads_a & (slot.dst == quant_row)) | (reads_b & (slot.src == quant_row))))

        # ---- scratchpad data (cycle s + 1) into the array --------------------------------
        s1_pre = Signal()
        s1_mm = Signal()
        s1_row = Signal(range(rows))
        m.d.sync += [
            s1_pre.eq(issuing & is_preload),
            s1_mm.eq(issuing & slot.work & (cur.op == Opcode.MATMUL)),
            s1_row.eq(idx),
        ]
        for k in range(rows):
            # Idle cycles feed zeros: results never depend on stale scratchpad data.
            m.d.comb += array.act[k].eq(Mux(s1_mm, self.spad.data[8 * k:8 * k + 8].as_signed(), 0))
        for n in range(cols):
            # Gated like the activations: the weight skew registers only toggle during a PRELOAD.
            m.d.comb += array.w_data[n].eq(Mux(s1_pre, self.spad.data[8 * n:8 * n + 8].as_signed(), 0))
        m.d.comb += [array.w_valid.eq(s1_pre), array.w_row.eq(s1_row)]

        # ---- slot delay line to back-end stage R (cycle s + L) ---------------------------
        delayed = [slot]
        for j in range(self.r_delay):
            nxt = Signal(_Slot, name=f"slot_d{j + 1}")
            m.d.sync += nxt.eq(delayed[-1])
            delayed.append(nxt)
        r = delayed[-1]

        # ---- R: accumulator reads (a cycle earlier when the data takes two) -----------------
        ahead = self.acc_read_latency - 1
        reader = delayed[-1 - ahead]
        reads_dst, reads_src = _reads(reader)
        m.d.comb += [
            self.acc_rd_a.addr.eq(reader.dst),
            self.acc_rd_a.en.eq(reader.valid & reader.work & reads_dst),
            self.acc_rd_b.addr.eq(reader.src),
            self.acc_rd_b.en.eq(reader.valid & reader.work & reads_src),
        ]
        x = Signal(_Slot)
        m.d.sync += x.eq(r)

        # ---- X (X1, X2 with two stages): forwarding, vector unit ---------------------------
        row = data.ArrayLayout(signed(32), cols)
        w = Signal(_Slot)
        w_en = Signal()
        w_data = Signal(row)
        prev_data = Signal(row)         # the row written in the cycle before
        m.d.sync += prev_data.eq(w_data)
        back = x                        # the slot whose result vec.result holds
        if self.stages == 2:
            back = Signal(_Slot, name="x2")
            m.d.sync += back.eq(x)
        back_writes = back.valid & back.work & _in(back.op, _WRITING_OPS)
        # Rows written by the slots ahead whose write the read may have missed, youngest first: the data
        # in X, and the enable and row of the slot that holds it one cycle earlier, in the cycle of the
        # read, where they are compared with the read's row (so a register selects the forwarding in X).
        sources = [(back_writes, back.dst, w_data), (w_en, w.dst, prev_data)]
        if ahead:
            # A read a cycle earlier also misses the write of the cycle before the read in R.
            older_en, older_addr, older_data = Signal(), Signal(ROW_ADDR_BITS), Signal(row)
            m.d.sync += [older_en.eq(w_en), older_addr.eq(w.dst), older_data.eq(prev_data)]
            sources.append((older_en, older_addr, older_data))
        if self.stages == 2:
            # The slot one ahead, in X2: its result is final unless it is a VQUANT (the front end's bubble
            # keeps a slot from needing that one).
            sources.insert(0, (x.valid & x.work & _in(x.op, _WRITING_OPS) & (x.op != Opcode.VQUANT),
                               x.dst, vec.alu))

        def forwarded(port, read_row, name):
            fwd = Signal(row, name=name)
            value = port.data
            for i, (en, dst, data_) in reversed(list(enumerate(sources))):
                hit = Signal(name=f"{name}_hit{i}")
                m.d.sync += hit.eq(en & (dst == read_row))
                value = Mux(hit, data_, value)
            m.d.comb += fwd.eq(value)
            return fwd

        m.d.comb += [
            vec.op.eq(x.op),
            vec.a.eq(forwarded(self.acc_rd_a, r.dst, "fwd_a")),
            vec.b.eq(forwarded(self.acc_rd_b, r.src, "fwd_b")),
            vec.mm.eq(array.result),
            vec.accumulate.eq(x.accumulate),
            vec.mult.eq(x.mult), vec.shift.eq(x.shift), vec.zp.eq(x.zp), vec.relu.eq(x.relu),
        ]
        m.d.sync += [
            w.eq(back),
            w_en.eq(back_writes),
            w_data.eq(vec.result),
        ]

        # ---- W: accumulator write, done ------------------------------------------------------
        m.d.comb += [
            self.acc_wr.addr.eq(w.dst),
            self.acc_wr.en.eq(w_en),
            self.acc_wr.data.eq(w_data),
            self.done.eq(w.valid & w.last),
        ]

        # Commands in flight: at most one per pipeline stage plus the one being accepted.
        outstanding = Signal(range(self.r_delay + 8))
        m.d.sync += outstanding.eq(outstanding + accept - self.done)
        m.d.comb += self.busy.eq(outstanding != 0)
        return m
