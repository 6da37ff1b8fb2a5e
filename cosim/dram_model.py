"""The simulation's DRAM: serves the core's DRAM port with the config's bandwidth and latency.

Simulation only; the synthesizable core never contains it (:class:`~npuforge.cosim.simtop.SimTop`
adds it). It models ``dram_bytes // B`` beats of ``B = config.dram_bytes_per_cycle`` bytes.

Timing (deterministic, independent of data and addresses)
---------------------------------------------------------
- ``req_ready`` is always 1: one request (read or write) per cycle, i.e. ``B`` bytes per
  cycle, is the configured bandwidth.
- A read accepted in cycle ``t`` returns its beat with ``resp_valid`` in cycle
  ``t + dram_latency``, in request order. Its data is the memory as of the acceptance
  (it sees every write accepted before it, none accepted after it).
- A write is applied at acceptance, byte by byte under ``req_wstrb``.

Storage
-------
``storage="verilog"`` (the default, for Verilator) instantiates ``npuforge_simmem``
(``cosim/simmem.v``), which loads whole images with ``$fread`` and dumps the
written range with ``$writememh`` and tracks the range of written beats; a multi-MiB Amaranth memory would
take minutes to convert. ``storage="amaranth"`` uses an Amaranth ``Memory`` so that
``amaranth.sim`` unit tests can run the same model (``init`` gives its contents).
"""

from __future__ import annotations

from amaranth.hdl import ClockSignal, Instance, Module, Mux, Signal
from amaranth.lib import memory, wiring
from amaranth.lib.wiring import In, Out

from ..hw.interfaces import dram_port_signature

__all__ = ["DramModel", "SIMMEM_MODULE", "dram_geometry"]

SIMMEM_MODULE = "npuforge_simmem"


def dram_geometry(config) -> tuple[int, int, int]:
    """``(beat bytes, beats, beat address bits)`` of the DRAM of ``config``."""
    b = config.dram_bytes_per_cycle
    if config.dram_bytes % b:
        raise ValueError(f"dram_bytes ({config.dram_bytes}) must be a multiple of dram_bytes_per_cycle ({b})")
    depth = config.dram_bytes // b
    return b, depth, max(1, (depth - 1).bit_length())


class DramModel(wiring.Component):
    """DRAM model with fixed latency and one request per cycle.

    Parameters
    ----------
    config : HwConfig
        Gives ``dram_bytes``, ``dram_bytes_per_cycle`` and ``dram_latency``.
    storage : str
        ``"verilog"`` (black-box ``npuforge_simmem``) or ``"amaranth"`` (an Amaranth memory).
    init : sequence of int, optional
        Initial beats, ``storage="amaranth"`` only.
    file_in, file_out : str
        Files the Verilog storage loads from (binary) and dumps to (hex) (relative to the simulator's cwd).

    Ports
    -----
    bus : the DRAM port, flipped (the model serves the core).
    load, dump : In(1)
        Verilog storage only: a rising edge loads ``file_in`` (zeroing the rest) or dumps the
        written beats to ``file_out``.
    wr_lo, wr_hi : Out(abits + 1)
        Verilog storage only: the lowest and highest beat written since the last load.
    """

    def __init__(self, config, *, storage: str = "verilog", init=(), file_in: str = "dram_in.bin",
                 file_out: str = "dram_out.hex"):
        if storage not in ("verilog", "amaranth"):
            self._MustUse__silence = True       # never elaborated: no "created but never used" warning
            raise ValueError(f"storage must be 'verilog' or 'amaranth', not {storage!r}")
        if init and storage != "amaranth":
            self._MustUse__silence = True
            raise ValueError("init is only supported with storage='amaranth'; the Verilog storage loads files")
        self.config = config
        self.storage = storage
        self.beat_bytes, self.depth, self.abits = dram_geometry(config)
        self.latency = config.dram_latency
        self.init = list(init)
        self.file_in = file_in
        self.file_out = file_out
        super().__init__({
            "bus": Out(dram_port_signature(config).flip()),
            "load": In(1),
            "dump": In(1),
            "wr_lo": Out(self.abits + 1),
            "wr_hi": Out(self.abits + 1),
        })

    def elaborate(self, platform):
        m = Module()
        bus = self.bus
        width = 8 * self.beat_bytes
        accept = Signal()
        is_read = Signal()
        m.d.comb += [
            bus.req_ready.eq(1),
            accept.eq(bus.req_valid),
            is_read.eq(bus.req_valid & ~bus.req_write),
        ]
        addr = Signal(self.abits)
        m.d.comb += addr.eq(bus.req_addr[:self.abits])

        # Storage: rdata holds the beat read at acceptance from the next cycle on (cycle t+1).
        rdata = Signal(width)
        if self.storage == "verilog":
            m.submodules.storage = Instance(
                SIMMEM_MODULE,
                p_WIDTH=width, p_DEPTH=self.depth, p_ABITS=self.abits,
                p_FILE_IN=self.file_in, p_FILE_OUT=self.file_out,
                i_clk=ClockSignal(), i_addr=addr, i_en=accept, i_we=bus.req_write,
                i_wdata=bus.req_wdata, i_wstrb=bus.req_wstrb, o_rdata=rdata,
                i_load=self.load, i_dump=self.dump, o_wr_lo=self.wr_lo, o_wr_hi=self.wr_hi,
            )
        else:
            m.submodules.storage = mem = memory.Memory(
                shape=width, depth=self.depth, init=self.init)
            wp = mem.write_port(granularity=8)
            rp = mem.read_port(transparent_for=())
            m.d.comb += [
                wp.addr.eq(addr), wp.data.eq(bus.req_wdata),
                wp.en.eq(Mux(accept & bus.req_write, bus.req_wstrb, 0)),
                rp.addr.eq(addr), rp.en.eq(is_read), rdata.eq(rp.data),
            ]

        # Delay line for the remaining latency - 1 cycles: valid bits in a shift register,
        # data in a ring indexed by a free-running cycle counter, so each cycle moves one beat
        # whatever the latency.
        lat = self.latency
        if lat == 1:
            valid1 = Signal()
            m.d.sync += valid1.eq(is_read)
            m.d.comb += [bus.resp_valid.eq(valid1), bus.resp_rdata.eq(rdata)]
            return m
        valid = Signal(lat)          # valid[k]: a read accepted k+1 cycles ago
        m.d.sync += valid.eq((valid << 1) | is_read)
        ring_depth = 1 << max(1, (lat - 1).bit_length())
        m.submodules.ring = ring = memory.Memory(shape=width, depth=ring_depth, init=[])
        cbits = ring_depth.bit_length() - 1
        now = Signal(cbits)
        m.d.sync += now.eq(now + 1)
        rw = ring.write_port()
        rr = ring.read_port(transparent_for=(rw,))
        # The beat read at t is in rdata during t+1 (valid[0]); it enters the ring at slot (t+1)
        # and is read back during t+L-1 (slot now - (L-2)), to be presented in t+L.
        m.d.comb += [
            rw.addr.eq(now), rw.data.eq(rdata), rw.en.eq(valid[0]),
            rr.addr.eq(now - (lat - 2)), rr.en.eq(1),
            bus.resp_valid.eq(valid[lat - 1]),
            bus.resp_rdata.eq(rr.data),
        ]
        return m

