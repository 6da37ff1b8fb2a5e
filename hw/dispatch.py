"""The dispatcher: instruction memory, fetch, decode, scalar registers and dispatch-time checks.

Everything about the instruction word comes from :mod:`npuforge.isa.spec`: the
word is viewed as :class:`~npuforge.isa.spec.Instr`, reserved-bit masks come from
the encoder's operand tables, legal dependency flags from ``LEGAL_DEPS``. No
opcode number or bit position is typed here.

Behaviour (isa/execution.py, "Dispatch")
----------------------------------------
The instruction at ``pc`` sits in the decode stage. In one cycle it is checked
(``PC_RANGE``, then ``ILLEGAL_INSTR``, then ``ADDR_RANGE``), and then executed
(scalar instructions) or resolved and written into its queue. The first error
stops the dispatcher and is reported on ``error_*`` for one cycle (the core
latches it).

Timing
------
- ``start`` (cycle 0) resets pc, registers and state and presents address 0 to the
  instruction memory; instruction 0 is in decode in cycle 1.
- The memory read address is chosen combinationally from the next pc (pc + 1 or the
  taken ``dbnz`` target), so every instruction that does not stall takes exactly
  **1 cycle**, taken branches included (no branch bubble).
- A queue instruction stalls while its queue is full; it is written in the first
  cycle its queue has space (``queue_depth`` entries; a slot freed by the unit in
  cycle t is usable by the dispatcher in cycle t+1).
- ``fence`` stalls while any queue is non-empty or any unit is not idle; it leaves
  decode in the first cycle they all are (1 cycle if already idle).
- ``halt`` stops dispatch in the cycle it is decoded.
- An error is reported in the cycle its instruction is in decode.

FPGA implementation
-------------------
On a platform that asks for FPGA memories (``npuforge_memory = "fpga"``, the board SoCs) the
address checks do no arithmetic in the decode cycle. Each check asks whether a resolved
address, ``(r[reg] + off) mod 2**32``, lies in ``[0, bound]``, where ``bound`` (the last legal
row or byte, less the rows or bytes the instruction spans, e.g. the DRAM room
``dram_bytes - ((rows-1)*stride + len*elem_bytes)``) and ``off`` come from the word alone.
The register values that pass form the cyclic interval ``[-off, bound - off] mod 2**32``,
so when the word is written into the instruction memory, its two checks (the DMA's row and
DRAM operands, or a compute instruction's source and destination) are resolved into that
interval, with the register to compare, and kept beside the word in a second memory
(*predecode*, :data:`PREDECODE`) read with it. Decode then compares a register with two
bounds. The behaviour and the timing are the same as the plain form's, which the simulation
presets use (and where the extra memory would cost an ASIC area).
"""

from amaranth.hdl import Array, C, Cat, Module, Mux, Signal, signed
from amaranth.lib import data, enum, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..isa.encoding import DEP_FLAGS, _codec
from ..isa.spec import (BY_OPCODE, LEGAL_DEPS, NUM_REGS, WORD_BITS, ErrorCode, Instr, Opcode,
                        Queue)
from .interfaces import PC_BITS, ComputeCmd, DmaCmd
from .soc.multiport import on_fpga

__all__ = ["Dispatcher", "DepFlags", "queue_entry_layout", "dma_element_bytes", "mem_is_spad",
           "DMA_ENTRY", "COMPUTE_ENTRY", "PREDECODE", "PREDECODE_BITS"]


DepFlags = data.StructLayout({name: 1 for name in DEP_FLAGS})


def queue_entry_layout(cmd_layout) -> data.StructLayout:
    """A queue entry: the resolved command, its dependency flags and its instruction index."""
    return data.StructLayout({"cmd": cmd_layout, "deps": DepFlags, "pc": PC_BITS})


DMA_ENTRY = queue_entry_layout(DmaCmd)
COMPUTE_ENTRY = queue_entry_layout(ComputeCmd)


def mem_is_spad(operand) -> bool:
    """Whether a ``mem`` operand of the ISA table addresses scratchpad rows (else accumulator rows)."""
    return operand.space == "spad"


def dma_element_bytes(op: Opcode) -> int:
    """Bytes per DRAM element of a load or store (the ISA declaration's ``elem_bytes``)."""
    return BY_OPCODE[op].elem_bytes


def _mem_operands(op: Opcode):
    """(path, is_spad, rows_source) of each row operand of a queue instruction.

    rows_source is "field" (the instruction's ``rows``) or "array" (PRELOAD: the array's rows).
    """
    out = []
    for o in BY_OPCODE[op].operands:
        if o.kind == "mem":
            out.append((o.path, mem_is_spad(o), "array" if op == Opcode.PRELOAD else "field"))
    return out


class Dispatcher(wiring.Component):
    """Fetch, decode, scalar execution, checks and queue writes.

    Parameters
    ----------
    config : HwConfig

    Ports
    -----
    start : In(1)
        Pulse: reset pc, registers and state, then run from instruction 0.
    stop : In(1)
        Level: the core has latched an error (e.g. DEADLOCK); dispatch no further.
    all_idle : In(1)
        Every queue empty and every unit idle (for ``fence``).
    imem_we, imem_addr, imem_data : In
        Host write port of the instruction memory.
    load, compute, store : queue write ports (``data``, ``valid`` out, ``ready`` in).
    running, halted : Out(1)
        Dispatching, or stopped at ``halt``.
    halting : Out(1)
        ``halt`` is executed this cycle (``halted`` from the next).
    error, error_code, error_pc : Out
        One-cycle report of a dispatch-time error.
    stuck, stuck_pc : Out
        The dispatcher waits on a full queue or on a fence, at instruction ``stuck_pc``.
    dispatched : Out(1)
        An instruction left decode this cycle.
    full_stall : Out(1)
        The instruction in decode waits on a full queue.
    """

    def __init__(self, config):
        if config.imem_words > 1 << PC_BITS:
            raise ValueError(f"imem_words must be at most {1 << PC_BITS}, not {config.imem_words}")
        self.config = config
        super().__init__({
            "start": In(1),
            "stop": In(1),
            "all_idle": In(1),
            "imem_we": In(1),
            "imem_addr": In(PC_BITS),
            "imem_data": In(WORD_BITS),
            "load_data": Out(DMA_ENTRY), "load_valid": Out(1), "load_ready": In(1),
            "compute_data": Out(COMPUTE_ENTRY), "compute_valid": Out(1), "compute_ready": In(1),
            "store_data": Out(DMA_ENTRY), "store_valid": Out(1), "store_ready": In(1),
            "running": Out(1),
            "halted": Out(1),
            "halting": Out(1),
            "error": Out(1),
            "error_code": Out(ErrorCode),
            "error_pc": Out(PC_BITS),
            "stuck": Out(1),
            "stuck_pc": Out(PC_BITS),
            "dispatched": Out(1),
            "full_stall": Out(1),
            "pc": Out(PC_BITS + 1),
        })

    def elaborate(self, platform):
        cfg = self.config
        m = Module()

        m.submodules.imem = imem = Memory(shape=WORD_BITS, depth=cfg.imem_words, init=[])
        wp = imem.write_port()
        rp = imem.read_port(transparent_for=())
        m.d.comb += [wp.en.eq(self.imem_we), wp.addr.eq(self.imem_addr), wp.data.eq(self.imem_data)]

        pc = Signal(range(cfg.imem_words + 1))
        running = Signal()
        halted = Signal()
        regs = Array(Signal(32, name=f"r{i}") for i in range(NUM_REGS))
        # ones[i]: r[i] == 1, from the registers alone (ready while the word is read), so that dbnz's
        # branch test selects one bit rather than a register.
        ones = Signal(NUM_REGS)
        m.d.comb += ones.eq(Cat(*(r == 1 for r in regs)))
        m.d.comb += [self.running.eq(running), self.halted.eq(halted), self.pc.eq(pc)]

        word = Signal(Instr)
        m.d.comb += word.eq(rp.data)
        raw = word.as_value()
        opv = word.hdr.op.as_value()

        # ---- legality ----------------------------------------------------------------------
        known = Signal()
        reserved = Signal()
        bad_dep = Signal()
        queue = Signal(Queue)
        full_mask = (1 << WORD_BITS) - 1
        flags = {name: getattr(word.hdr, name) for name in DEP_FLAGS}
        with m.Switch(opv):
            for op in Opcode:
                spec = BY_OPCODE[op]
                _, used = _codec(op)
                with m.Case(op.value):
                    m.d.comb += [known.eq(1), queue.eq(spec.queue),
                                 reserved.eq((raw & C(full_mask & ~used, WORD_BITS)).any())]
                    illegal_flags = [flags[f] for f, ch in LEGAL_DEPS[spec.queue].items() if ch is None]
                    if illegal_flags:
                        m.d.comb += bad_dep.eq(_any_of(illegal_flags))
        illegal = ~known | reserved | bad_dep

        # ---- register reads and resolution -------------------------------------------------
        def reg(index):
            return regs[index]

        sc = word.scalar
        dma = word.dma
        cp = word.compute
        dma_mem = Signal(32)
        dma_dram = Signal(32)
        cp_src = Signal(32)
        cp_dst = Signal(32)
        m.d.comb += [
            dma_mem.eq(reg(dma.mem.reg) + dma.mem.off),
            dma_dram.eq(reg(dma.dram.reg) + dma.dram.off),
            cp_src.eq(reg(cp.src.reg) + cp.src.off),
            cp_dst.eq(reg(cp.dst.reg) + cp.dst.off),
        ]

        # ---- address checks ----------------------------------------------------------------
        addr_bad = Signal()
        dbnz_taken = Signal()
        dbnz_bad = Signal()
        rd_val = Signal(32)
        m.d.comb += rd_val.eq(reg(sc.rd) - 1)
        # dbnz on r0 never branches: the decrement is dropped and r0 still reads 0.
        m.d.comb += dbnz_taken.eq((sc.rd != 0) & ~ones.bit_select(sc.rd, 1))     # rd_val != 0
        target = sc.imm
        m.d.comb += dbnz_bad.eq(dbnz_taken & ((target < 0) | (target >= cfg.imem_words)))

        if on_fpga(platform):
            m.d.comb += addr_bad.eq(self._predecoded_checks(m, rp, regs))
        else:
            m.d.comb += addr_bad.eq(self._decoded_checks(m, word, dma_mem, dma_dram, cp_src, cp_dst))

        # ---- resolved queue entries ---------------------------------------------------------
        dma_entry = Signal(DMA_ENTRY)
        cp_entry = Signal(COMPUTE_ENTRY)
        for entry in (dma_entry, cp_entry):
            m.d.comb += [entry.pc.eq(pc), entry.deps.as_value().eq(Cat(*flags.values()))]
        dc = dma_entry.cmd
        m.d.comb += [
            dc.op.eq(word.hdr.op), dc.mem.eq(dma_mem), dc.dram.eq(dma_dram), dc.rows.eq(dma.rows),
            dc.len.eq(dma.len), dc.stride.eq(dma.stride), dc.mult.eq(reg(dma.q.qreg)),
            dc.shift.eq(dma.q.shift), dc.zp.eq(dma.q.zp), dc.relu.eq(dma.q.relu),
        ]
        cc = cp_entry.cmd
        m.d.comb += [
            cc.op.eq(word.hdr.op), cc.src.eq(cp_src), cc.dst.eq(cp_dst), cc.rows.eq(cp.rows),
            cc.accumulate.eq(cp.accumulate), cc.mult.eq(reg(cp.q.qreg)),
            cc.shift.eq(cp.q.shift), cc.zp.eq(cp.q.zp), cc.relu.eq(cp.q.relu),
        ]
        m.d.comb += [self.load_data.eq(dma_entry), self.store_data.eq(dma_entry),
                     self.compute_data.eq(cp_entry)]

        # ---- execute ------------------------------------------------------------------------
        active = running & ~self.stop
        advance = Signal()
        next_pc = Signal.like(pc)
        err_code = Signal(ErrorCode)
        is_op = {op: opv == op.value for op in Opcode}
        m.d.comb += next_pc.eq(Mux(is_op[Opcode.DBNZ] & dbnz_taken, target, pc + 1))

        # The error checks, in priority order. A scalar op's writes depend only on the checks a scalar
        # op can fail, and a queue op's push only on a queue op's: the address checks (a register read,
        # an add and a compare) stay off the scalar registers' enables, which are the widest fan-out.
        pc_bad = pc >= cfg.imem_words
        branch_bad = is_op[Opcode.DBNZ] & dbnz_bad
        is_scalar = queue == Queue.SCALAR
        decodes = active & ~pc_bad & ~illegal
        scalar_ok = decodes & is_scalar & ~branch_bad
        queue_ok = decodes & ~is_scalar & ~addr_bad
        with m.If(active):
            with m.If(pc_bad):
                m.d.comb += err_code.eq(ErrorCode.PC_RANGE)
            with m.Elif(illegal):
                m.d.comb += err_code.eq(ErrorCode.ILLEGAL_INSTR)
            with m.Elif(branch_bad):
                m.d.comb += err_code.eq(ErrorCode.PC_RANGE)
            with m.Elif(~is_scalar & addr_bad):
                m.d.comb += err_code.eq(ErrorCode.ADDR_RANGE)
            with m.If(err_code != ErrorCode.NONE):
                m.d.comb += [self.error.eq(1), self.error_code.eq(err_code), self.error_pc.eq(pc)]
                m.d.sync += running.eq(0)
        with m.If(scalar_ok):
            with m.If(is_op[Opcode.SETI] & (sc.rd != 0)):
                m.d.sync += regs[sc.rd].eq(sc.imm)
            with m.If(is_op[Opcode.ADDI] & (sc.rd != 0)):
                m.d.sync += regs[sc.rd].eq(reg(sc.rs) + sc.imm)
            with m.If(is_op[Opcode.DBNZ]):
                with m.If(sc.rd != 0):
                    m.d.sync += regs[sc.rd].eq(rd_val)
            with m.If(is_op[Opcode.HALT]):
                m.d.comb += self.halting.eq(1)
                m.d.sync += [running.eq(0), halted.eq(1)]
            with m.Elif(is_op[Opcode.FENCE]):
                m.d.comb += [advance.eq(self.all_idle), self.stuck.eq(~self.all_idle)]
            with m.Else():
                m.d.comb += advance.eq(1)
        with m.If(queue_ok):
            with m.Switch(queue):
                for q, valid, ready in ((Queue.LOAD, self.load_valid, self.load_ready),
                                        (Queue.COMPUTE, self.compute_valid, self.compute_ready),
                                        (Queue.STORE, self.store_valid, self.store_ready)):
                    with m.Case(q):
                        m.d.comb += [valid.eq(1), advance.eq(ready),
                                     self.stuck.eq(~ready), self.full_stall.eq(~ready)]
        m.d.comb += self.dispatched.eq(advance | (scalar_ok & is_op[Opcode.HALT]))

        m.d.comb += self.stuck_pc.eq(pc)
        with m.If(advance):
            m.d.sync += pc.eq(next_pc)
        # The next word is fetched as if the checks pass: an error stops dispatch and the word is never
        # used, and the fetch address (into a block RAM) does not wait for the checks.
        leaves = Signal()           # the instruction in decode leaves it this cycle unless it has an error
        with m.Switch(queue):
            with m.Case(Queue.SCALAR):
                m.d.comb += leaves.eq(~is_op[Opcode.HALT] & (~is_op[Opcode.FENCE] | self.all_idle))
            for q, ready in ((Queue.LOAD, self.load_ready), (Queue.COMPUTE, self.compute_ready),
                             (Queue.STORE, self.store_ready)):
                with m.Case(q):
                    m.d.comb += leaves.eq(ready)
        m.d.comb += rp.addr.eq(Mux(active & leaves, next_pc, pc))

        with m.If(self.start):
            m.d.comb += rp.addr.eq(0)
            m.d.sync += [pc.eq(0), running.eq(1), halted.eq(0)]
            m.d.sync += [r.eq(0) for r in regs]
        return m

    def _decoded_checks(self, m, word, dma_mem, dma_dram, cp_src, cp_dst):
        """The plain form's address checks, from the resolved addresses: whether any fails."""
        cfg = self.config
        addr_bad = Signal()
        dma, cp = word.dma, word.compute
        room = self._dram_room(m, word, "decoded")
        with m.Switch(word.hdr.op.as_value()):
            for op in Opcode:
                spec = BY_OPCODE[op]
                if spec.queue == Queue.SCALAR:
                    continue
                with m.Case(op.value):
                    if spec.fmt == "dma":
                        limit, max_len = _dma_limits(cfg, op)
                        problems = [dma_mem > limit - dma.rows, dma.len > max_len,
                                    (dma.len != 0) & (dma_dram > room)]
                        m.d.comb += addr_bad.eq((dma.rows != 0) & _any_of(problems))
                    else:
                        problems = []
                        for path, limit, count, live in _compute_operands(cfg, op, cp):
                            problems.append(live & ((cp_src if path == "src" else cp_dst) > limit - count))
                        m.d.comb += addr_bad.eq(_any_of(problems))
        return addr_bad

    def _predecoded_checks(self, m, rp, regs):
        """The FPGA form's address checks: the predecode memory, written beside the instruction memory
        and read with it, and the two register compares of decode; whether any check fails."""
        cfg = self.config
        m.submodules.predecode = pre = Memory(shape=PREDECODE, depth=cfg.imem_words, init=[])
        wp = pre.write_port()
        pre_rp = pre.read_port(transparent_for=())
        m.d.comb += [wp.en.eq(self.imem_we), wp.addr.eq(self.imem_addr), pre_rp.addr.eq(rp.addr),
                     wp.data.eq(self._predecode(m, self.imem_data))]
        passes = []
        for name in ("a", "b"):
            check = pre_rp.data[name]
            value = Signal(32, name=f"check_{name}_reg")
            m.d.comb += value.eq(regs[check.reg])
            above_lo, below_hi = value >= check.lo, value <= check.hi
            passes.append(Mux(check.mode == _Mode.ALWAYS, 1, Mux(check.mode == _Mode.NEVER, 0,
                              Mux(check.mode == _Mode.RANGE, above_lo & below_hi, above_lo | below_hi))))
        return ~(passes[0] & passes[1])

    def _predecode(self, m, data_, name="written"):
        """A word's two address checks as register intervals (:data:`PREDECODE`; both ALWAYS for a
        scalar or unknown word)."""
        cfg = self.config
        word = Signal(Instr, name=name)
        pre = Signal(PREDECODE, name=f"{name}_predecode")
        m.d.comb += word.eq(data_)
        dma, cp = word.dma, word.compute
        room = self._dram_room(m, word, name)

        def check(slot, operand, live, bound):
            # The registers r with (r + off) mod 2**32 in [0, bound] (bound < 2**31): [-off, bound - off] mod 2**32.
            lo, hi = Signal(32, name=f"{name}_{slot}_lo"), Signal(32, name=f"{name}_{slot}_hi")
            target = pre[slot]
            m.d.comb += [lo.eq(-operand.off), hi.eq(bound - operand.off),
                         target.reg.eq(operand.reg), target.lo.eq(lo), target.hi.eq(hi),
                         target.mode.eq(Mux(~live, _Mode.ALWAYS, Mux(bound < 0, _Mode.NEVER,
                                                                     Mux(lo <= hi, _Mode.RANGE, _Mode.WRAPPED))))]

        with m.Switch(word.hdr.op.as_value()):
            for op in Opcode:
                spec = BY_OPCODE[op]
                if spec.queue == Queue.SCALAR:
                    continue
                with m.Case(op.value):
                    if spec.fmt == "dma":
                        limit, max_len = _dma_limits(cfg, op)
                        # An over-long row fails whatever the registers: an empty interval.
                        check("a", dma.mem, dma.rows != 0, Mux(dma.len > max_len, -1, limit - dma.rows))
                        check("b", dma.dram, (dma.rows != 0) & (dma.len != 0), room)
                    else:
                        for slot, (path, limit, count, live) in zip("ab", _compute_operands(cfg, op, cp)):
                            check(slot, cp.src if path == "src" else cp.dst, live, limit - count)
        return pre

    def _dram_room(self, m, word, name):
        """``dram_bytes - ((rows-1)*stride + len*elem_bytes)`` of a DMA word (0 for other words)."""
        span = Signal(41, name=f"{name}_span")      # (rows-1) * stride: the DRAM offset of the last row
        room = Signal(signed(_ROOM_BITS), name=f"{name}_room")
        m.d.comb += span.eq((word.dma.rows - 1) * word.dma.stride)
        with m.Switch(word.hdr.op.as_value()):
            for op in Opcode:
                if BY_OPCODE[op].fmt == "dma" and BY_OPCODE[op].queue != Queue.SCALAR:
                    with m.Case(op.value):
                        m.d.comb += room.eq(self.config.dram_bytes - span - word.dma.len * dma_element_bytes(op))
        return room


_ROOM_BITS = 44         # the DRAM room: dram_bytes (< 2**29) less a 41-bit span and len * 4


class _Mode(enum.Enum, shape=2):
    """How a predecoded check compares its register ``r`` with ``lo`` and ``hi``."""
    ALWAYS = 0          # no check (a scalar word, or no rows)
    NEVER = 1           # fails whatever the register (the span alone is out of range)
    RANGE = 2           # lo <= r <= hi
    WRAPPED = 3         # lo <= r or r <= hi (the interval wraps past 2**32)


_CHECK = data.StructLayout({"reg": (NUM_REGS - 1).bit_length(), "lo": 32, "hi": 32, "mode": _Mode})
PREDECODE = data.StructLayout({"a": _CHECK, "b": _CHECK})
"""A predecode entry: the word's two address checks (DMA: rows, DRAM; compute: source, destination)."""
PREDECODE_BITS = PREDECODE.size


def _dma_limits(cfg, op):
    """(rows of the memory a DMA opcode addresses, the longest row it may move) of a config."""
    (_, spad, _), = _mem_operands(op)
    return (cfg.spad_rows, cfg.spad_row_bytes) if spad else (cfg.acc_rows, cfg.cols)


def _compute_operands(cfg, op, cp):
    """(path, limit, count, live) of each row operand of a compute opcode: ``[base, base + count)``
    must lie in ``[0, limit)`` when ``live`` (a ``rows`` of 0 touches nothing)."""
    out = []
    for path, spad, rows_source in _mem_operands(op):
        limit = cfg.spad_rows if spad else cfg.acc_rows
        if rows_source == "array":
            out.append((path, limit, cfg.rows, C(1, 1)))
        else:
            out.append((path, limit, cp.rows, cp.rows != 0))
    return out


def _any_of(bits):
    """OR of a list of 1-bit values (0 for an empty list)."""
    return Cat(*bits).any() if bits else C(0, 1)
