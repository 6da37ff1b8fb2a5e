"""On-chip "DRAM" for an FPGA SoC: block RAM behind the core's DRAM port, plus a host port.

Timing seen by the core is exactly that of the simulation's DRAM model
(:mod:`npuforge.cosim.dram_model`), so a run on the board takes the cycles the RTL
co-simulation reports:

- ``req_ready`` is always 1 (one read or write request per cycle);
- a read accepted in cycle ``t`` returns its beat with ``resp_valid`` in cycle
  ``t + dram_latency``, in request order, with the memory as of the acceptance;
- a write is applied at acceptance under ``req_wstrb``.

The memory holds ``beats`` beats of ``B = dram_bytes_per_cycle`` bytes, usually far fewer
than ``config.dram_bytes``: beat addresses are taken modulo ``beats`` and ``overrun``
goes high (sticky until ``clear_overrun``) when the core addresses a beat at or past
``beats``, so that the host can tell a result computed from aliased memory.

The host port (``host_*``) shares the memory's single address: the SoC uses it only while
the core does not run (the core holds its requests low then, see :mod:`npuforge.hw.core`).
A host read with ``host_re`` in cycle ``t`` has its beat on ``host_rdata`` in ``t + 1``.
Because only one address drives the memory, Yosys can map it to single-port RAM
(the iCE40 UP5K's SPRAM) as well as to block RAM.
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import memory, wiring
from amaranth.lib.wiring import In, Out

from ..interfaces import dram_port_signature

__all__ = ["OnChipDram"]


class OnChipDram(wiring.Component):
    """Block-RAM DRAM with the DRAM model's timing (module docstring).

    Parameters
    ----------
    config : HwConfig
        Gives ``dram_bytes_per_cycle`` and ``dram_latency``.
    nbytes : int
        Size in bytes: a multiple of the beat size, a power of two, at most ``config.dram_bytes``.

    Raises
    ------
    ValueError
        For a size that is not a power-of-two multiple of the beat or exceeds the config's DRAM.
    """

    def __init__(self, config, nbytes: int):
        b = config.dram_bytes_per_cycle
        if not (isinstance(nbytes, int) and nbytes >= b and nbytes % b == 0 and nbytes & (nbytes - 1) == 0):
            raise ValueError(f"nbytes must be a power of two and a multiple of {b} (the beat), not {nbytes!r}")
        if nbytes > config.dram_bytes:
            raise ValueError(f"nbytes={nbytes} exceeds the config's DRAM ({config.dram_bytes} bytes)")
        self.config = config
        self.beat_bytes = b
        self.beats = nbytes // b
        self.abits = max(1, (self.beats - 1).bit_length())
        self.latency = config.dram_latency
        super().__init__({
            "bus": Out(dram_port_signature(config).flip()),
            "host_addr": In(self.abits),
            "host_re": In(1),
            "host_we": In(1),
            "host_wstrb": In(b),
            "host_wdata": In(8 * b),
            "host_rdata": Out(8 * b),
            "overrun": Out(1),
            "clear_overrun": In(1),
        })

    def elaborate(self, platform):
        m = Module()
        bus = self.bus
        width = 8 * self.beat_bytes
        core_read = Signal()
        m.d.comb += [bus.req_ready.eq(1), core_read.eq(bus.req_valid & ~bus.req_write)]
        with m.If(self.clear_overrun):
            m.d.sync += self.overrun.eq(0)
        with m.Elif(bus.req_valid & (bus.req_addr >= self.beats)):
            m.d.sync += self.overrun.eq(1)

        m.submodules.storage = mem = memory.Memory(shape=width, depth=self.beats, init=[])
        wp = mem.write_port(granularity=8)
        rp = mem.read_port(transparent_for=())
        addr = Signal(self.abits)
        host = ~bus.req_valid
        m.d.comb += [
            addr.eq(Mux(host, self.host_addr, bus.req_addr[:self.abits])),
            wp.addr.eq(addr), rp.addr.eq(addr),
            wp.data.eq(Mux(host, self.host_wdata, bus.req_wdata)),
            wp.en.eq(Mux(host, Mux(self.host_we, self.host_wstrb, 0), Mux(bus.req_write, bus.req_wstrb, 0))),
            # Reads and writes never share a cycle; saying so lets Yosys use single-port RAM (SPRAM).
            rp.en.eq((core_read | (host & self.host_re)) & ~wp.en.any()),
            self.host_rdata.eq(rp.data),
        ]

        lat = self.latency
        if lat == 1:
            m.d.sync += bus.resp_valid.eq(core_read)
            m.d.comb += bus.resp_rdata.eq(rp.data)
            return m
        # The beat read at t is on rp.data during t+1 (and held while no read follows, but the next
        # core read may come at t+1): it goes through lat-1 more registers, or a ring for long latencies.
        valid = Signal(lat)
        m.d.sync += valid.eq((valid << 1) | core_read)
        m.d.comb += bus.resp_valid.eq(valid[lat - 1])
        if lat <= 4:
            stage = rp.data
            for i in range(lat - 1):
                nxt = Signal(width, name=f"resp_stage{i}")
                m.d.sync += nxt.eq(stage)
                stage = nxt
            m.d.comb += bus.resp_rdata.eq(stage)
            return m
        ring_depth = 1 << max(1, (lat - 1).bit_length())
        m.submodules.ring = ring = memory.Memory(shape=width, depth=ring_depth, init=[])
        now = Signal(ring_depth.bit_length() - 1)
        m.d.sync += now.eq(now + 1)
        rw = ring.write_port()
        rr = ring.read_port(transparent_for=(rw,))
        m.d.comb += [
            rw.addr.eq(now), rw.data.eq(rp.data), rw.en.eq(valid[0]),
            rr.addr.eq(now - (lat - 2)), rr.en.eq(1),
            bus.resp_rdata.eq(rr.data),
        ]
        return m
