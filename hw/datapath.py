"""The datapath: the three engines, the two on-chip memories and the DRAM arbiter, wired.

It has :func:`~npuforge.hw.core.datapath_signature`: the three engine handshakes
(``load``, ``compute``, ``store``) seen from the sequencers, and the one DRAM port.

Memory ports (see :mod:`npuforge.hw.memories`)
----------------------------------------------
- scratchpad ``wr`` <- load engine ``spad_wr``; ``rd_compute`` <- compute engine ``spad``;
  ``rd_store`` <- store engine ``spad_rd``.
- accumulator ``wr_load`` <- load engine ``acc_wr``; ``wr_compute`` <- compute ``acc_wr``;
  ``rd_a``/``rd_b`` <- compute ``acc_rd_a``/``acc_rd_b``; ``rd_store`` <- store ``acc_rd``.
- Row addresses are truncated to the memory's address width (the dispatcher has
  checked every row against the memory size).
- On an FPGA platform (``npuforge_memory = "fpga"``) the compute engine's two accumulator
  reads take two cycles (``Accumulator(compute_read_latency=2)``: the block RAM copies' rows
  registered before the live-value-table select) and the engine reads a cycle earlier
  (``ComputeEngine(acc_read_latency=2)``), so the long path from the block RAM through the
  select and the forwarding into the vector unit is cut in two; every cycle stays the same.

Every port is private to one engine, so the memories add no stall; the only shared
resource is the DRAM port, arbitrated round-robin by :class:`~npuforge.hw.dram_arbiter.DramArbiter`.
"""

from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import Out

from .compute import ComputeEngine
from .dma_load import LoadEngine
from .dma_store import StoreEngine
from .dram_arbiter import DramArbiter
from .interfaces import ComputeCmd, DmaCmd, dram_port_signature, engine_signature
from .memories import Accumulator, Scratchpad
from .soc.multiport import on_fpga

__all__ = ["Datapath", "acc_read_latency"]

_HANDSHAKE = ("cmd", "cmd_valid", "cmd_ready", "done", "busy")


def _connect_mem(m, user, mem):
    """Connect a user's memory port to the memory's port, truncating the address."""
    m.d.comb += [mem.addr.eq(user.addr), mem.en.eq(user.en)]
    if "data" in user.signature.members:
        if user.signature.members["data"].flow == wiring.Out:
            m.d.comb += mem.data.eq(user.data)
        else:
            m.d.comb += user.data.eq(mem.data)


class Datapath(wiring.Component):
    """Engines, memories and DRAM arbiter of one NPU core.

    Parameters
    ----------
    config : HwConfig
    """

    def __init__(self, config):
        self.config = config
        super().__init__({
            "load": Out(engine_signature(DmaCmd)),
            "compute": Out(engine_signature(ComputeCmd)),
            "store": Out(engine_signature(DmaCmd)),
            "dram": Out(dram_port_signature(config)),
        })

    def elaborate(self, platform):
        cfg = self.config
        m = Module()
        m.submodules.spad = spad = Scratchpad(cfg)
        read_latency = acc_read_latency(platform)
        m.submodules.acc = acc = Accumulator(cfg, compute_read_latency=read_latency)
        m.submodules.load_engine = le = LoadEngine(cfg)
        m.submodules.compute_engine = ce = ComputeEngine(cfg, acc_read_latency=read_latency)
        m.submodules.store_engine = se = StoreEngine(cfg)
        m.submodules.arbiter = arb = DramArbiter(cfg)

        for name, eng in (("load", le), ("compute", ce), ("store", se)):
            port = getattr(self, name)
            m.d.comb += [eng.cmd.eq(port.cmd), eng.cmd_valid.eq(port.cmd_valid),
                         port.cmd_ready.eq(eng.cmd_ready), port.done.eq(eng.done), port.busy.eq(eng.busy)]

        _connect_mem(m, le.spad_wr, spad.wr)
        _connect_mem(m, ce.spad, spad.rd_compute)
        _connect_mem(m, se.spad_rd, spad.rd_store)
        _connect_mem(m, le.acc_wr, acc.wr_load)
        _connect_mem(m, ce.acc_wr, acc.wr_compute)
        _connect_mem(m, ce.acc_rd_a, acc.rd_a)
        _connect_mem(m, ce.acc_rd_b, acc.rd_b)
        _connect_mem(m, se.acc_rd, acc.rd_store)

        wiring.connect(m, le.dram, arb.load)
        wiring.connect(m, se.dram, arb.store)
        wiring.connect(m, arb.dram, wiring.flipped(self.dram))
        return m


def acc_read_latency(platform) -> int:
    """Cycles of the compute engine's accumulator reads on ``platform``: 2 where it asks for FPGA
    memories (the module docstring), else 1. The breakdown builds its blocks with it too."""
    return 2 if on_fpga(platform) else 1
