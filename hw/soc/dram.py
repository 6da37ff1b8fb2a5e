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

With ``dram_latency`` of 2 or more the core's request is registered before the memory (one of the
read's latency cycles moves in front of it, and a write lands a cycle after its acceptance, before
any later request reaches the memory), so that no path runs from the requesters through the DRAM
arbiter into the block RAM: the core sees the same cycles.

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

__all__ = ["OnChipDram", "latency_ring_depth"]


def _held_cycles(latency: int) -> int:
    """Cycles the core's request waits in a register before the memory: 1 from latency 2 on (module docstring)."""
    return 1 if latency >= 2 else 0


def latency_ring_depth(latency: int) -> int:
    """Entries of the block-RAM ring that delays read beats for ``latency``, or 0 where registers do.

    A beat leaves the memory ``1 + _held_cycles(latency)`` cycles after its request; up to three more
    cycles are registers, longer delays a ring.
    """
    stages = latency - 1 - _held_cycles(latency)
    return 0 if stages <= 3 else 1 << max(1, (latency - 1).bit_length())


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
        lat = self.latency
        m.d.comb += bus.req_ready.eq(1)
        with m.If(self.clear_overrun):
            m.d.sync += self.overrun.eq(0)
        with m.Elif(bus.req_valid & (bus.req_addr >= self.beats)):
            m.d.sync += self.overrun.eq(1)

        # The request the memory serves this cycle: the core's own (latency 1) or the one it made
        # the cycle before (registered, module docstring).
        ahead = _held_cycles(lat)
        req = {name: getattr(bus, f"req_{name}") for name in ("valid", "write", "addr", "wdata", "wstrb")}
        if ahead:
            held = {name: Signal.like(sig, name=f"held_{name}") for name, sig in req.items()}
            m.d.sync += [held[name].eq(sig) for name, sig in req.items()]
            req = held

        m.submodules.storage = mem = memory.Memory(shape=width, depth=self.beats, init=[])
        wp = mem.write_port(granularity=8)
        rp = mem.read_port(transparent_for=())
        addr = Signal(self.abits)
        host = ~req["valid"]
        core_read = Signal()
        m.d.comb += [
            core_read.eq(req["valid"] & ~req["write"]),
            addr.eq(Mux(host, self.host_addr, req["addr"][:self.abits])),
            wp.addr.eq(addr), rp.addr.eq(addr),
            wp.data.eq(Mux(host, self.host_wdata, req["wdata"])),
            wp.en.eq(Mux(host, Mux(self.host_we, self.host_wstrb, 0), Mux(req["write"], req["wstrb"], 0))),
            # Reads and writes never share a cycle; saying so lets Yosys use single-port RAM (SPRAM).
            rp.en.eq((core_read | (host & self.host_re)) & ~wp.en.any()),
            self.host_rdata.eq(rp.data),
        ]

        if lat == 1:
            m.d.sync += bus.resp_valid.eq(core_read)
            m.d.comb += bus.resp_rdata.eq(rp.data)
            return m
        # valid[k]: a read accepted k + 1 cycles ago. Its beat is on rp.data from cycle t + 1 + ahead
        # (and held while no read follows, but the next core read may come a cycle later): it goes
        # through the remaining lat - 1 - ahead registers, or a ring for long latencies.
        valid = Signal(lat)
        m.d.sync += valid.eq((valid << 1) | (bus.req_valid & ~bus.req_write))
        m.d.comb += bus.resp_valid.eq(valid[lat - 1])
        stages = lat - 1 - ahead
        ring_depth = latency_ring_depth(lat)
        if not ring_depth:
            stage = rp.data
            for i in range(stages):
                nxt = Signal(width, name=f"resp_stage{i}")
                m.d.sync += nxt.eq(stage)
                stage = nxt
            m.d.comb += bus.resp_rdata.eq(stage)
            return m
        m.submodules.ring = ring = memory.Memory(shape=width, depth=ring_depth, init=[])
        now = Signal(ring_depth.bit_length() - 1)
        m.d.sync += now.eq(now + 1)
        rw = ring.write_port()
        rr = ring.read_port(transparent_for=(rw,))
        m.d.comb += [
            rw.addr.eq(now), rw.data.eq(rp.data), rw.en.eq(valid[ahead]),
            rr.addr.eq(now - (stages - 1)), rr.en.eq(1),
            bus.resp_rdata.eq(rr.data),
        ]
        return m
