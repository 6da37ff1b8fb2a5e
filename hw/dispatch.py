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

With ``dispatch_stages: 2`` (for FPGA clock rates; both board points set it) a queue
instruction spends one more cycle in decode: its first cycle reads its registers and resolves
its addresses into registers, and from its second cycle it is checked and, with no error,
written into its queue as above (so a full queue is waited on from the second cycle, and
``ADDR_RANGE`` is reported in the second cycle). The checks and the queue write then start from
flip-flops, where with 1 they follow the block RAM, the register read and the add in the same
cycle. Scalar instructions, ``PC_RANGE`` and ``ILLEGAL_INSTR`` keep their timing.

FPGA implementation
-------------------
On a platform that asks for FPGA memories (``npuforge_memory = "fpga"``, the board SoCs) the
DRAM range check of a DMA instruction does not multiply in the decode cycle: its room,
``dram_bytes - ((rows-1)*stride + len*elem_bytes)``, depends on the word alone, so it is
computed when the word is written into the instruction memory and kept beside it in a
second memory (*predecode*) read with the word. Decode then compares the resolved DRAM
address with the room. The behaviour and the timing are the same as the plain form's,
which the simulation presets use (and where the extra memory would cost an ASIC area).

In both forms the pc moves and the registers are written as if an instruction's checks pass
(an error stops dispatch, and nothing reads the pc or the registers again before ``start``
clears them), so their enables come from the word and the queues' ``ready`` alone, not from
the register read that a faulting ``dbnz`` depends on.
"""

from amaranth.hdl import Array, C, Cat, Module, Mux, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..isa.encoding import DEP_FLAGS, _codec
from ..isa.spec import (BY_OPCODE, LEGAL_DEPS, NUM_REGS, WORD_BITS, ErrorCode, Instr, Opcode,
                        Queue)
from .interfaces import PC_BITS, ComputeCmd, DmaCmd
from .soc.multiport import on_fpga

__all__ = ["Dispatcher", "DepFlags", "queue_entry_layout", "dma_element_bytes", "mem_is_spad",
           "DMA_ENTRY", "COMPUTE_ENTRY", "PREDECODE_BITS"]


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

        # ---- branch checks and the DRAM room ----------------------------------------------
        addr_bad = Signal()
        dbnz_taken = Signal()
        dbnz_bad = Signal()
        rd_val = Signal(32)
        m.d.comb += rd_val.eq(reg(sc.rd) - 1)
        # dbnz on r0 never branches: the decrement is dropped and r0 still reads 0.
        m.d.comb += dbnz_taken.eq((sc.rd != 0) & (reg(sc.rd) != 1))      # rd_val != 0, without the borrow chain
        target = sc.imm
        m.d.comb += dbnz_bad.eq(dbnz_taken & ((target < 0) | (target >= cfg.imem_words)))

        # DRAM range of a DMA instruction: its last byte, dram + (rows-1)*stride + len*elem_bytes, past
        # the DRAM <=> dram > room (see _dram_room), computed in decode or kept from the write (predecode).
        room = Signal(signed(PREDECODE_BITS))
        if on_fpga(platform):
            m.submodules.predecode = pre = Memory(shape=signed(PREDECODE_BITS), depth=cfg.imem_words, init=[])
            pre_wp = pre.write_port()
            pre_rp = pre.read_port(transparent_for=())
            written = Signal(Instr)
            m.d.comb += [written.eq(self.imem_data), pre_wp.en.eq(self.imem_we), pre_wp.addr.eq(self.imem_addr),
                         pre_wp.data.eq(self._dram_room(m, written, "written")), pre_rp.addr.eq(rp.addr),
                         room.eq(pre_rp.data)]
        else:
            m.d.comb += room.eq(self._dram_room(m, word, "decoded"))

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

        # ---- what the checks and the queue write read ---------------------------------------------
        # dispatch_stages: 1 checks and writes the entries as they are resolved, in one cycle. With 2, a
        # queue instruction's first cycle in decode registers them (``resolved`` is high from its second
        # cycle): its checks and its queue write then start from flip-flops, off the block RAM, register
        # read and add that resolve it.
        checked = {"op": opv, "mem": dma_mem, "dram": dma_dram, "src": cp_src, "dst": cp_dst, "room": room,
                   "dma_rows": dma.rows, "dma_len": dma.len, "cp_rows": cp.rows}
        if cfg.dispatch_stages == 1:
            resolved = C(1, 1)
            dma_out, cp_out = dma_entry, cp_entry
        else:
            resolved = Signal()
            registered = {name: Signal(v.shape(), name=f"resolved_{name}") for name, v in checked.items()}
            dma_out, cp_out = Signal(DMA_ENTRY), Signal(COMPUTE_ENTRY)
            with m.If(~resolved):
                m.d.sync += [r.eq(checked[name]) for name, r in registered.items()]
                m.d.sync += [dma_out.eq(dma_entry), cp_out.eq(cp_entry)]
            checked = registered
        m.d.comb += [self.load_data.eq(dma_out), self.store_data.eq(dma_out), self.compute_data.eq(cp_out)]
        self._address_checks(m, addr_bad, checked)

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
        scalar_ok = decodes & is_scalar         # a scalar op's writes: each waits only for its own checks
        queue_ok = decodes & ~is_scalar & resolved & ~addr_bad
        with m.If(active):
            with m.If(pc_bad):
                m.d.comb += err_code.eq(ErrorCode.PC_RANGE)
            with m.Elif(illegal):
                m.d.comb += err_code.eq(ErrorCode.ILLEGAL_INSTR)
            with m.Elif(branch_bad):
                m.d.comb += err_code.eq(ErrorCode.PC_RANGE)
            with m.Elif(~is_scalar & resolved & addr_bad):
                m.d.comb += err_code.eq(ErrorCode.ADDR_RANGE)
            with m.If(err_code != ErrorCode.NONE):
                m.d.comb += [self.error.eq(1), self.error_code.eq(err_code), self.error_pc.eq(pc)]
                m.d.sync += running.eq(0)
        # One register write port: its enable comes from the word alone. A ``dbnz`` whose taken branch
        # faults writes its decrement too: the error stops dispatch and ``start`` clears the registers,
        # so nothing reads it, and the enable of every register does not wait for the register read.
        reg_we = Signal()
        reg_wd = Signal(32)
        with m.If(scalar_ok & (sc.rd != 0)):
            with m.Switch(opv):
                for op, value in ((Opcode.SETI, sc.imm), (Opcode.ADDI, reg(sc.rs) + sc.imm), (Opcode.DBNZ, rd_val)):
                    with m.Case(op.value):
                        m.d.comb += [reg_we.eq(1), reg_wd.eq(value)]
        with m.If(reg_we):
            m.d.sync += regs[sc.rd].eq(reg_wd)
        with m.If(scalar_ok):
            with m.If(is_op[Opcode.HALT]):
                m.d.comb += self.halting.eq(1)
                m.d.sync += [running.eq(0), halted.eq(1)]
            with m.Elif(is_op[Opcode.FENCE]):
                m.d.comb += [advance.eq(self.all_idle), self.stuck.eq(~self.all_idle)]
            with m.Else():
                m.d.comb += advance.eq(~branch_bad)
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
        # The pc moves, and the next word is fetched, as if the checks pass: an error stops dispatch and
        # neither is used again before ``start``, so they do not wait for the checks.
        leaves = Signal()           # the instruction in decode leaves it this cycle unless it has an error
        with m.Switch(queue):
            with m.Case(Queue.SCALAR):
                m.d.comb += leaves.eq(~is_op[Opcode.HALT] & (~is_op[Opcode.FENCE] | self.all_idle))
            for q, ready in ((Queue.LOAD, self.load_ready), (Queue.COMPUTE, self.compute_ready),
                             (Queue.STORE, self.store_ready)):
                with m.Case(q):
                    m.d.comb += leaves.eq(ready & resolved)
        fetch = active & leaves
        with m.If(fetch):
            m.d.sync += pc.eq(next_pc)
        m.d.comb += rp.addr.eq(Mux(fetch, next_pc, pc))
        if cfg.dispatch_stages == 2:
            with m.If(active & ~is_scalar):
                m.d.sync += resolved.eq(~advance)       # set in the first cycle, cleared as it leaves

        with m.If(self.start):
            m.d.comb += rp.addr.eq(0)
            m.d.sync += [pc.eq(0), running.eq(1), halted.eq(0)]
            m.d.sync += [r.eq(0) for r in regs]
            if cfg.dispatch_stages == 2:
                m.d.sync += resolved.eq(0)
        return m

    def _address_checks(self, m, addr_bad, v):
        """``addr_bad``: a queue instruction's rows, lengths or DRAM bytes out of range (``v``: its opcode,
        resolved addresses, DRAM room and the word's counts)."""
        cfg = self.config

        def rows_out(base, count, limit):
            # [base, base+count) must lie in [0, limit): base > limit - count, where limit - count comes
            # from the word alone (signed: negative when count > limit), so it is ready before base is.
            return base > (limit - count)

        with m.Switch(v["op"]):
            for op in Opcode:
                spec = BY_OPCODE[op]
                if spec.queue == Queue.SCALAR:
                    continue
                with m.Case(op.value):
                    problems = []
                    if spec.fmt == "dma":
                        (path, spad, _), = _mem_operands(op)
                        limit = cfg.spad_rows if spad else cfg.acc_rows
                        max_len = cfg.spad_row_bytes if spad else cfg.cols
                        problems = [rows_out(v["mem"], v["dma_rows"], limit), v["dma_len"] > max_len,
                                    (v["dma_len"] != 0) & (v["dram"] > v["room"])]
                        m.d.comb += addr_bad.eq((v["dma_rows"] != 0) & _any_of(problems))
                    else:
                        for path, spad, rows_source in _mem_operands(op):
                            base = v["src"] if path == "src" else v["dst"]
                            limit = cfg.spad_rows if spad else cfg.acc_rows
                            if rows_source == "array":
                                problems.append(rows_out(base, cfg.rows, limit))
                            else:
                                problems.append((v["cp_rows"] != 0) & rows_out(base, v["cp_rows"], limit))
                        m.d.comb += addr_bad.eq(_any_of(problems))

    def _dram_room(self, m, word, name):
        """``dram_bytes - ((rows-1)*stride + len*elem_bytes)`` of a DMA word (0 for other words)."""
        span = Signal(41, name=f"{name}_span")      # (rows-1) * stride: the DRAM offset of the last row
        room = Signal(signed(PREDECODE_BITS), name=f"{name}_room")
        m.d.comb += span.eq((word.dma.rows - 1) * word.dma.stride)
        with m.Switch(word.hdr.op.as_value()):
            for op in Opcode:
                if BY_OPCODE[op].fmt == "dma" and BY_OPCODE[op].queue != Queue.SCALAR:
                    with m.Case(op.value):
                        m.d.comb += room.eq(self.config.dram_bytes - span - word.dma.len * dma_element_bytes(op))
        return room


PREDECODE_BITS = 44     # the room: dram_bytes (< 2**29) less a 41-bit span and len * 4


def _any_of(bits):
    """OR of a list of 1-bit values (0 for an empty list)."""
    return Cat(*bits).any() if bits else C(0, 1)
