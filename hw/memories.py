"""The NPU's on-chip memories: the banked scratchpad and the accumulator memory.

Both are synchronous SRAMs sized from :class:`~npuforge.config.HwConfig`, with
independent ports that may all be used in every cycle. The port signatures are
those of :mod:`npuforge.hw.interfaces`, flipped (the memory is the responder).

Addresses are row indices, ``ROW_ADDR_BITS`` (16) wide on every port like the
ISA's row addresses; a memory uses the low ``config.spad_addr_bits`` /
``config.acc_addr_bits`` of them (the dispatcher has checked the range, so the
high bits are zero).

Timing (every port, every cycle)
--------------------------------
- Write: a write with ``en`` high in cycle ``t`` is stored at the end of cycle
  ``t``; a read with ``en`` high in cycle ``t + 1`` or later returns it.
- Read: ``en`` high in cycle ``t`` puts the row on ``data`` in cycle ``t + 1``;
  ``data`` then holds until the next read on that port (``en`` low keeps it).
- Read during write to the same row in the same cycle (from any other port)
  returns the OLD row. Programs never rely on it: the dependency tokens order
  every producer/consumer pair (see :mod:`npuforge.isa.execution`).
- Two writes to the same accumulator row in the same cycle (``wr_load`` and
  ``wr_compute``) leave an undefined row; only a program without a token path
  between the load and compute units can do that, and its result is undefined.

There is no stall and no arbitration: a port never waits. (The accumulator's ``rd_a`` and
``rd_b`` may be built with two cycles of read latency instead, ``compute_read_latency=2``,
for a compute engine that reads a cycle earlier; the FPGA datapath does.)

Implementation: Amaranth ``Memory`` objects, unless the platform passed to ``elaborate``
asks for FPGA memories (``platform.npuforge_memory == "fpga"``, set by the FPGA SoC
platforms): then :class:`~npuforge.hw.soc.multiport.ReplicatedMemory` builds the same
ports, with the same timing, from one-write-one-read RAMs that map to block RAM.
"""

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In

from .interfaces import ROW_ADDR_BITS, read_port_signature, write_port_signature
from .soc.multiport import ReplicatedMemory, memory_factory, registered_read

__all__ = ["Scratchpad", "Accumulator"]


def _check_config(config):
    if config.spad_rows % config.spad_banks:
        raise ValueError(f"spad_banks must divide spad_rows={config.spad_rows}, not {config.spad_banks}")


class Scratchpad(wiring.Component):
    """``config.spad_rows`` int8 rows of ``config.spad_row_bytes`` lanes in ``config.spad_banks`` banks.

    Row ``r`` lives in bank ``r % spad_banks`` at bank address ``r // spad_banks``
    (row-interleaved, so consecutive rows use different banks). Each bank has
    one write port and two read ports, so the ports below never conflict.

    Ports (memory side)
    -------------------
    wr : write port (the load engine)
    rd_compute : read port (the compute engine: PRELOAD, MATMUL)
    rd_store : read port (the store engine: STORE_SP)

    Parameters
    ----------
    config : HwConfig

    Raises
    ------
    ValueError
        If ``spad_banks`` does not divide ``spad_rows``.
    """

    def __init__(self, config):
        _check_config(config)
        self.config = config
        self.addr_bits = ROW_ADDR_BITS
        self.data_bits = 8 * config.spad_row_bytes
        self.banks = config.spad_banks
        super().__init__({
            "wr": In(write_port_signature(self.addr_bits, self.data_bits)),
            "rd_compute": In(read_port_signature(self.addr_bits, self.data_bits)),
            "rd_store": In(read_port_signature(self.addr_bits, self.data_bits)),
        })

    def elaborate(self, platform):
        m = Module()
        nb = self.banks
        bank_bits = (nb - 1).bit_length()
        depth = self.config.spad_rows // nb
        mems = []
        make_memory = memory_factory(platform)     # an FPGA platform asks for 1W1R-RAM-built memories
        for b in range(nb):
            mem = make_memory(shape=self.data_bits, depth=depth, init=[])
            m.submodules[f"bank{b}"] = mem
            mems.append(mem)

        def bank_of(addr):
            return addr[:bank_bits] if bank_bits else 0

        def row_of(addr):
            return addr[bank_bits:self.config.spad_addr_bits]

        wr = self.wr
        for b, mem in enumerate(mems):
            wp = mem.write_port()
            m.d.comb += [wp.addr.eq(row_of(wr.addr)), wp.data.eq(wr.data),
                         wp.en.eq(wr.en & (bank_of(wr.addr) == b))]

        for name in ("rd_compute", "rd_store"):
            port = getattr(self, name)
            rps = []
            for b, mem in enumerate(mems):
                # No transparency: a same-cycle write is not forwarded (old data, see the module docstring).
                rp = mem.read_port(domain="sync")
                m.d.comb += [rp.addr.eq(row_of(port.addr)), rp.en.eq(port.en & (bank_of(port.addr) == b))]
                rps.append(rp)
            if nb == 1:
                m.d.comb += port.data.eq(rps[0].data)
            else:
                # The bank that answered the last read; held with the data while en is low.
                sel = Signal(bank_bits, name=f"{name}_bank")
                with m.If(port.en):
                    m.d.sync += sel.eq(bank_of(port.addr))
                out = rps[0].data
                for b in range(1, nb):
                    out = Mux(sel == b, rps[b].data, out)
                m.d.comb += port.data.eq(out)
        return m


class Accumulator(wiring.Component):
    """``config.acc_rows`` rows of ``config.cols`` int32 lanes (lane i in bits [32i, 32i+32)).

    Ports (memory side)
    -------------------
    wr_load : write port (the load engine: LOAD_ACC8, LOAD_ACC32)
    wr_compute : write port (the compute engine: MATMUL and vector results)
    rd_a, rd_b : read ports (the compute engine: MATMUL accumulate, vector operands)
    rd_store : read port (the store engine: STORE_ACC32, STORE_ACC8)

    Parameters
    ----------
    config : HwConfig
    compute_read_latency : int
        1 (the module docstring's timing) or 2: ``rd_a`` and ``rd_b`` put the row on ``data`` a
        cycle later (``en`` in ``t``, the row as of before ``t``'s writes in ``t + 2``, held until
        the next read's row arrives), with the read data registered before it leaves the memory.
        A compute engine built with the same ``acc_read_latency`` reads a cycle earlier and keeps
        its timing (:mod:`npuforge.hw.compute`); the FPGA datapath uses 2.

    Raises
    ------
    ValueError
        If ``compute_read_latency`` is not 1 or 2.
    """

    def __new__(cls, *args, **kwargs):
        cls._check(*args, **kwargs)  # before the object exists: a rejected one must not warn "never elaborated"
        return super().__new__(cls)

    @staticmethod
    def _check(config, compute_read_latency=1):
        if compute_read_latency not in (1, 2):
            raise ValueError(f"Accumulator compute_read_latency must be 1 or 2, not {compute_read_latency!r}")

    def __init__(self, config, compute_read_latency: int = 1):
        self.compute_read_latency = compute_read_latency
        self.config = config
        self.addr_bits = ROW_ADDR_BITS
        self.data_bits = 32 * config.cols
        w = write_port_signature(self.addr_bits, self.data_bits)
        r = read_port_signature(self.addr_bits, self.data_bits)
        super().__init__({
            "wr_load": In(w), "wr_compute": In(w),
            "rd_a": In(r), "rd_b": In(r), "rd_store": In(r),
        })

    def elaborate(self, platform):
        m = Module()
        make_memory = memory_factory(platform)     # an FPGA platform asks for 1W1R-RAM-built memories
        m.submodules.mem = mem = make_memory(shape=self.data_bits, depth=self.config.acc_rows, init=[])
        na = self.config.acc_addr_bits
        for name in ("wr_load", "wr_compute"):
            port = getattr(self, name)
            wp = mem.write_port()
            m.d.comb += [wp.addr.eq(port.addr[:na]), wp.data.eq(port.data), wp.en.eq(port.en)]
        for name in ("rd_a", "rd_b", "rd_store"):
            port = getattr(self, name)
            latency = self.compute_read_latency if name != "rd_store" else 1
            if latency == 1:
                rp = mem.read_port(domain="sync")
                data = rp.data
            elif isinstance(mem, ReplicatedMemory):
                rp = mem.read_port(domain="sync", latency=2)      # registers before its bank select
                data = rp.data
            else:
                rp = mem.read_port(domain="sync")
                arrived = Signal(name=f"{name}_arrived")
                m.d.sync += arrived.eq(port.en)
                data = registered_read(m, rp.data, arrived, f"{name}_data")
            m.d.comb += [rp.addr.eq(port.addr[:na]), rp.en.eq(port.en), port.data.eq(data)]
        return m
