"""The host-link protocol engine: parses request frames from the UART, acts, sends reply frames.

Frame format, commands, address spaces, statuses and the load-session rule are declared
in :mod:`npuforge.hw.soc.memmap`; this is their gateware. It streams: a WRITE's bytes
go to memory as they arrive (no frame buffer), a READ's bytes are fetched one by one
while the transmitter sends, so frames may be up to 65535 bytes long with no RAM spent.

Rules beyond the memory map's
-----------------------------
- The access check (:meth:`SocMap.check_access`, plus BUSY while the core runs: every
  command but a READ of REGS) is made on the header; a refused WRITE still consumes its
  payload (storing nothing), so the framing stays in step.
- A frame not completed within ``timeout_cycles`` of its previous byte is dropped without
  a reply (taints the session if it was a WRITE that stored bytes); the next sync byte
  starts a new frame.
- ``start`` is a one-cycle pulse to the core; the overrun flag of the on-chip DRAM is
  cleared with it.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Signal, Value
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ..counters import Counters
from ..interfaces import PC_BITS
from ...isa.spec import WORD_BITS, ErrorCode
from .memmap import (REGS, REGS_BYTES, START_PAYLOAD, STATUS_BITS, SYNC_REQ, SYNC_RSP, Cmd, SocMap, Space, Status,
                     crc16_byte_step)

__all__ = ["HostLink", "crc16_next"]


def crc16_next(crc, byte):
    """One byte of CRC-16/CCITT-FALSE as a combinational expression (:func:`memmap.crc16_byte_step`).

    The step is linear over GF(2) in (crc, byte), so each output bit is the XOR of the input
    bits whose unit vectors set it; writing it that way keeps the netlist flat (the bit loop,
    written with nested Muxes, would copy its operand three times per bit).
    """
    cat = Cat(crc[:16], byte[:8])
    bits = []
    for out in range(16):
        taps = [i for i in range(24) if (crc16_byte_step(1 << i if i < 16 else 0, 1 << (i - 16) if i >= 16 else 0)
                                          >> out) & 1]
        bits.append(_xor(cat[i] for i in taps))
    return Cat(*bits)


def _xor(values):
    out = Const(0, 1)
    for v in values:
        out = out ^ v
    return out


class HostLink(wiring.Component):
    """Protocol engine between a UART and the NPU core (module docstring).

    Parameters
    ----------
    soc_map : SocMap
    timeout_cycles : int
        Inter-byte timeout of a request frame, in clock cycles.
    """

    def __init__(self, soc_map: SocMap, timeout_cycles: int):
        if not (isinstance(timeout_cycles, int) and 16 <= timeout_cycles < 1 << 32):
            raise ValueError(f"timeout_cycles must be an integer in 16..2**32-1, not {timeout_cycles!r}")
        self.map = soc_map
        self.timeout_cycles = timeout_cycles
        b = soc_map.beat_bytes
        self.beats = soc_map.dram_bytes // b
        self.dram_abits = max(1, (self.beats - 1).bit_length())
        super().__init__({
            "rx_data": In(8), "rx_valid": In(1),
            "tx_data": Out(8), "tx_valid": Out(1), "tx_ready": In(1),
            "start": Out(1), "busy": In(1), "done": In(1), "error": In(ErrorCode), "error_pc": In(PC_BITS),
            "counters": In(Counters),
            "imem_we": Out(1), "imem_addr": Out(PC_BITS), "imem_data": Out(WORD_BITS),
            "dram_addr": Out(self.dram_abits), "dram_re": Out(1), "dram_we": Out(1), "dram_wstrb": Out(b),
            "dram_wdata": Out(8 * b), "dram_rdata": In(8 * b), "dram_overrun": In(1), "clear_overrun": Out(1),
        })

    def _regs(self, m, session_bytes, tainted):
        """The REGS space as one vector, fields in :data:`REGS` order."""
        ident = self.map.identity()
        status = Signal(8)
        bits = {"busy": self.busy, "done": self.done, "tainted": tainted, "dram_overrun": self.dram_overrun}
        m.d.comb += [status[STATUS_BITS[k]].eq(v) for k, v in bits.items()]
        live = {"status": status, "error": self.error.as_value(), "error_pc": self.error_pc,
                "session_bytes": session_bytes}
        for name in REGS:
            if name.startswith("counter_"):
                live[name] = getattr(self.counters, name[len("counter_"):])
        parts = []
        for f in REGS.values():
            value = Const(ident[f.name], 8 * f.size) if f.name in ident else Value.cast(live[f.name])
            width = 8 * f.size
            parts.append(Cat(value, Const(0, width - len(value))) if len(value) < width else value[:width])
        vec = Signal(8 * REGS_BYTES)
        m.d.comb += vec.eq(Cat(*parts))
        return vec

    def elaborate(self, platform):
        m = Module()
        smap = self.map
        b = smap.beat_bytes
        lane_bits = (b - 1).bit_length()

        cmd = Signal(8)
        addr = Signal(32)
        length = Signal(16)
        count = Signal(16)          # bytes left in the current phase
        crc = Signal(16, init=0xFFFF)
        rx_crc = Signal(16)
        buf = Signal(WORD_BITS)     # IMEM word being assembled, or the START payload
        pre = Signal(8)             # the header check's status
        status = Signal(8)
        session_bytes = Signal(32)
        tainted = Signal()
        wrote = Signal()
        idle = Signal(range(self.timeout_cycles + 1))
        offset = addr[:24]
        space = addr[24:]
        regs = self._regs(m, session_bytes, tainted)
        strobe = (Const(1, b) << offset[:lane_bits])[:b] if lane_bits else Const(1, 1)

        rx, byte = self.rx_valid, self.rx_data
        m.d.sync += [self.imem_we.eq(0), self.start.eq(0), self.clear_overrun.eq(0)]
        m.d.comb += [self.dram_re.eq(0), self.dram_we.eq(0)]

        # ---- header check (registered in CHECK) ------------------------------------------
        end = Signal(25)
        m.d.comb += end.eq(offset + length)
        in_range = {s: end <= smap.space_bytes(s) for s in Space}
        check = Signal(8)
        with m.Switch(cmd):
            with m.Case(Cmd.READ):
                with m.If(~(((space == Space.DRAM) & in_range[Space.DRAM])
                            | ((space == Space.REGS) & in_range[Space.REGS]))):
                    m.d.comb += check.eq(Status.BAD_ADDRESS)
                with m.Elif((space == Space.DRAM) & self.busy):
                    m.d.comb += check.eq(Status.BUSY)
            with m.Case(Cmd.WRITE):
                imem_ok = (space == Space.IMEM) & in_range[Space.IMEM] & (offset[:4] == 0) & (length[:4] == 0)
                with m.If(~(((space == Space.DRAM) & in_range[Space.DRAM]) | imem_ok)):
                    m.d.comb += check.eq(Status.BAD_ADDRESS)
                with m.Elif(self.busy):
                    m.d.comb += check.eq(Status.BUSY)
            with m.Case(Cmd.BEGIN):
                with m.If(self.busy):
                    m.d.comb += check.eq(Status.BUSY)
            with m.Case(Cmd.START):
                with m.If((length != START_PAYLOAD) | (0 if smap.has_core else 1)):
                    m.d.comb += check.eq(Status.BAD_COMMAND)
                with m.Elif(self.busy):
                    m.d.comb += check.eq(Status.BUSY)
            with m.Default():
                m.d.comb += check.eq(Status.BAD_COMMAND)
        has_payload = (cmd == Cmd.WRITE) | (cmd == Cmd.START)

        # ---- reply bookkeeping -----------------------------------------------------------
        reply_len = Signal(16)
        data_byte = Signal(8)
        lane = Signal(max(1, lane_bits))
        tx_byte = Signal(8)
        m.d.comb += [self.tx_data.eq(tx_byte)]

        clear_ctr = Signal(max(self.dram_abits, (smap.imem_words - 1).bit_length()) + 1)
        clear_last = max(self.beats, smap.imem_words) - 1

        receiving = Signal()
        with m.If(receiving & ~rx):
            m.d.sync += idle.eq(idle + 1)
        with m.Else():
            m.d.sync += idle.eq(0)
        timed_out = receiving & (idle == self.timeout_cycles)

        def send(value, nxt, add_crc=True):
            """Offer one reply byte; go to ``nxt`` once the transmitter takes it."""
            m.d.comb += [self.tx_valid.eq(1), tx_byte.eq(value)]
            with m.If(self.tx_ready):
                if add_crc:
                    m.d.sync += crc.eq(crc16_next(crc, value))
                m.next = nxt

        with m.FSM():
            with m.State("IDLE"):
                with m.If(rx & (byte == SYNC_REQ)):
                    m.d.sync += [crc.eq(0xFFFF), count.eq(7), wrote.eq(0)]
                    m.next = "HEADER"
            with m.State("HEADER"):
                m.d.comb += receiving.eq(1)
                with m.If(rx):
                    # cmd, addr (4), len (2), little-endian: shift each byte in from the top.
                    m.d.sync += [crc.eq(crc16_next(crc, byte)), count.eq(count - 1),
                                 Cat(cmd, addr, length).eq(Cat(cmd, addr, length, byte)[8:])]
                    with m.If(count == 1):
                        m.next = "CHECK"
                with m.Elif(timed_out):
                    m.next = "IDLE"
            with m.State("CHECK"):
                m.d.comb += receiving.eq(1)
                m.d.sync += [pre.eq(check), count.eq(length)]
                with m.If(has_payload & (length != 0)):
                    m.next = "PAYLOAD"
                with m.Else():
                    m.d.sync += count.eq(2)
                    m.next = "CRC"
            with m.State("PAYLOAD"):
                m.d.comb += receiving.eq(1)
                with m.If(rx):
                    m.d.sync += [crc.eq(crc16_next(crc, byte)), count.eq(count - 1), buf.eq(Cat(buf[8:], byte)),
                                 addr.eq(addr + 1)]
                    with m.If((cmd == Cmd.WRITE) & (pre == Status.OK)):
                        m.d.sync += wrote.eq(1)
                        with m.If(space == Space.DRAM):
                            m.d.comb += [self.dram_we.eq(1), self.dram_addr.eq(offset[lane_bits:]),
                                         self.dram_wdata.eq(Cat(*([byte] * b))),
                                         self.dram_wstrb.eq(strobe)]
                        with m.Else():
                            with m.If(offset[:4] == 15):
                                m.d.sync += [self.imem_we.eq(1), self.imem_addr.eq(offset[4:]),
                                             self.imem_data.eq(Cat(buf[8:], byte))]
                    with m.If(count == 1):
                        m.d.sync += count.eq(2)
                        m.next = "CRC"
                with m.Elif(timed_out):
                    with m.If(wrote):
                        m.d.sync += tainted.eq(1)
                    m.next = "IDLE"
            with m.State("CRC"):
                m.d.comb += receiving.eq(1)
                with m.If(rx):
                    m.d.sync += [rx_crc.eq(Cat(rx_crc[8:], byte)), count.eq(count - 1)]
                    with m.If(count == 1):
                        m.next = "EXEC"
                with m.Elif(timed_out):
                    with m.If(wrote):
                        m.d.sync += tainted.eq(1)
                    m.next = "IDLE"
            with m.State("EXEC"):
                m.d.sync += reply_len.eq(0)
                with m.If(rx_crc != crc):
                    m.d.sync += status.eq(Status.BAD_CHECKSUM)
                    with m.If(wrote):
                        m.d.sync += tainted.eq(1)
                    m.next = "REPLY"
                with m.Elif(pre != Status.OK):
                    m.d.sync += status.eq(pre)
                    m.next = "REPLY"
                with m.Else():
                    m.d.sync += status.eq(Status.OK)
                    m.next = "REPLY"
                    with m.Switch(cmd):
                        with m.Case(Cmd.READ):
                            m.d.sync += reply_len.eq(length)
                        with m.Case(Cmd.WRITE):
                            m.d.sync += session_bytes.eq(session_bytes + length)
                        with m.Case(Cmd.BEGIN):
                            m.d.sync += clear_ctr.eq(0)
                            m.next = "CLEAR"
                        with m.Case(Cmd.START):
                            # buf holds the 12 payload bytes in its top 96 bits: hash, then count.
                            with m.If(buf[32:96] != smap.hash_int):
                                m.d.sync += status.eq(Status.BAD_HASH)
                            with m.Elif(tainted | (buf[96:128] != session_bytes)):
                                m.d.sync += status.eq(Status.NOT_LOADED)
                            with m.Else():
                                m.d.sync += [self.start.eq(1), self.clear_overrun.eq(1)]
            with m.State("CLEAR"):
                m.d.comb += [self.dram_we.eq(clear_ctr < self.beats), self.dram_addr.eq(clear_ctr),
                             self.dram_wstrb.eq((1 << b) - 1), self.dram_wdata.eq(0)]
                m.d.sync += [self.imem_we.eq(clear_ctr < smap.imem_words), self.imem_addr.eq(clear_ctr),
                             self.imem_data.eq(0), clear_ctr.eq(clear_ctr + 1)]
                with m.If(clear_ctr == clear_last):
                    m.d.sync += [session_bytes.eq(0), tainted.eq(0)]
                    m.next = "REPLY"
            with m.State("REPLY"):
                m.d.sync += crc.eq(0xFFFF)
                send(SYNC_RSP, "STATUS", add_crc=False)
            with m.State("STATUS"):
                send(status, "LEN0")
            with m.State("LEN0"):
                send(reply_len[:8], "LEN1")
            with m.State("LEN1"):
                with m.If(reply_len == 0):
                    send(reply_len[8:], "CRC0")
                with m.Else():
                    send(reply_len[8:], "FETCH")
            with m.State("FETCH"):
                # DRAM: read the beat (data next cycle); REGS: pick the byte now.
                m.d.comb += [self.dram_re.eq(space == Space.DRAM), self.dram_addr.eq(offset[lane_bits:])]
                m.d.sync += [lane.eq(offset[:lane_bits] if lane_bits else 0),
                             data_byte.eq(regs.word_select(offset[:8], 8))]
                m.next = "PICK"
            with m.State("PICK"):
                with m.If(space == Space.DRAM):
                    m.d.sync += data_byte.eq(self.dram_rdata.word_select(lane, 8))
                m.next = "DATA"
            with m.State("DATA"):
                with m.If(self.tx_ready):
                    m.d.sync += [addr.eq(addr + 1), reply_len.eq(reply_len - 1)]
                with m.If(reply_len == 1):
                    send(data_byte, "CRC0")
                with m.Else():
                    send(data_byte, "FETCH")
            with m.State("CRC0"):
                send(crc[:8], "CRC1", add_crc=False)
            with m.State("CRC1"):
                send(crc[8:], "IDLE", add_crc=False)
        return m
