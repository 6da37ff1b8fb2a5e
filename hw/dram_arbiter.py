"""The DRAM arbiter: the load and store engines share the core's one DRAM port.

The load engine only reads and the store engine only writes (their modules
guarantee it), so every read response belongs to the load engine: responses
are passed straight through to it, in request order, and the store side's
``resp_valid`` is tied low.

Policy (fixed, round-robin)
---------------------------
A one-bit register ``prio`` names the requester that wins when both have
``req_valid`` high in the same cycle; it starts at *load*. Whenever a request is
accepted by the DRAM port (``req_valid & req_ready`` there), ``prio`` moves to the
requester that was not granted. So:

- one requester alone gets the port in every cycle (no bubble);
- both requesting continuously alternate beat by beat (each gets every other
  accepted beat); the first tie after a run of load-only beats goes to the store.

Timing
------
Purely combinational apart from ``prio``: a request reaches the DRAM port in
the same cycle it is presented, and a response reaches the load engine in the
cycle the DRAM port returns it. The arbiter adds 0 cycles of latency.
``req_ready`` seen by a requester is ``dram.req_ready`` when it is granted, else 0;
it depends on the other requester's ``req_valid`` (never on its own).
"""

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .interfaces import dram_port_signature

__all__ = ["DramArbiter"]


class DramArbiter(wiring.Component):
    """Round-robin arbiter of the ``load`` (reads) and ``store`` (writes) requesters onto ``dram``.

    Ports
    -----
    load : DRAM port, responder side (the load engine's ``dram``)
    store : DRAM port, responder side (the store engine's ``dram``)
    dram : DRAM port, requester side (the core's DRAM port)
    grant_store : Out(1), which requester drives ``dram`` this cycle (for counters and waves)

    Parameters
    ----------
    config : HwConfig
        Gives the beat width ``dram_bytes_per_cycle``.
    """

    def __init__(self, config):
        self.config = config
        sig = dram_port_signature(config)
        super().__init__({
            "load": In(sig),
            "store": In(sig),
            "dram": Out(sig),
            "grant_store": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        ld, st, dram = self.load, self.store, self.dram
        prio_store = Signal()     # 1: the store wins the next tie
        grant_store = Signal()
        m.d.comb += grant_store.eq(st.req_valid & (~ld.req_valid | prio_store))
        m.d.comb += [
            self.grant_store.eq(grant_store),
            dram.req_valid.eq(ld.req_valid | st.req_valid),
            dram.req_write.eq(Mux(grant_store, st.req_write, ld.req_write)),
            dram.req_addr.eq(Mux(grant_store, st.req_addr, ld.req_addr)),
            dram.req_wdata.eq(Mux(grant_store, st.req_wdata, ld.req_wdata)),
            dram.req_wstrb.eq(Mux(grant_store, st.req_wstrb, ld.req_wstrb)),
            ld.req_ready.eq(dram.req_ready & ~grant_store),
            st.req_ready.eq(dram.req_ready & grant_store),
            ld.resp_valid.eq(dram.resp_valid),
            ld.resp_rdata.eq(dram.resp_rdata),
            st.resp_valid.eq(0),
            st.resp_rdata.eq(0),
        ]
        with m.If(dram.req_valid & dram.req_ready):
            m.d.sync += prio_store.eq(~grant_store)
        return m
