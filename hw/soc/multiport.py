"""Multi-port memories built from one-write-one-read RAMs, the way FPGA designs build them.

FPGA block RAM has one write and one read port (or two read/write ports); the core's
scratchpad banks have 1 write + 2 read ports and its accumulator 2 write + 3 read
ports (:mod:`npuforge.hw.memories`). Yosys cannot map those to block RAM and falls back
to flip-flops and wide multiplexers, which do not fit any of our boards. These classes
give the same ports with the same cycle behaviour from 1W1R RAMs:

- one write port, R read ports: R copies, all written by the write port, each read by
  one read port (:class:`ReplicatedMemory`);
- W write ports: W such banks, one per write port, and a *live value table* (LVT) of
  ``depth`` x ``ceil(log2 W)`` bits in flip-flops that records which bank holds the last
  write of each row; a read reads every bank and the LVT in the same cycle and picks
  (LaForest and Steffan, FPGA 2010).

Behaviour, identical to :class:`amaranth.lib.memory.Memory` with non-transparent
synchronous read ports (what the core uses): a read with ``en`` in cycle ``t`` puts the
row as of before cycle ``t``'s writes on ``data`` in ``t + 1``, and ``data`` holds while
``en`` is low. Two writes to one row in one cycle: the later write port wins (the core
documents that case as undefined). A read port made with ``latency=2`` puts the same row
on ``data`` one cycle later, in ``t + 2`` (held until the next read's row arrives): each copy's
block RAM output and the live-value table's answer are registered before the select, so a
read's select starts from flip-flops instead of the block RAM's slow clock-to-out.

:func:`memory_factory` picks the implementation: a platform (or a simulation stand-in)
with ``npuforge_memory = "fpga"`` gets these, anything else Amaranth's ``Memory``.
"""

from __future__ import annotations

from dataclasses import dataclass

from amaranth.hdl import Elaboratable, Module, Mux, Signal
from amaranth.lib.memory import Memory

__all__ = ["ReplicatedMemory", "memory_factory", "on_fpga", "FpgaStandIn", "OnFpga", "FPGA_MEMORY", "registered_read"]

FPGA_MEMORY = "fpga"


class FpgaStandIn:
    """Stands in for a board platform (simulation, conversion, breakdowns): asks for the FPGA
    implementation (these memories, the dispatcher's predecode)."""
    npuforge_memory = FPGA_MEMORY


class OnFpga(Elaboratable):
    """Elaborates ``inner`` as a board platform would (for simulation of the FPGA implementation)."""

    def __init__(self, inner):
        self.inner = inner

    def elaborate(self, platform):
        from amaranth.hdl import Fragment
        return Fragment.get(self.inner, FpgaStandIn())


def on_fpga(platform) -> bool:
    """Whether ``platform`` asks for the FPGA implementation (its ``npuforge_memory``, checked)."""
    choice = getattr(platform, "npuforge_memory", None)
    if choice not in (None, "native", FPGA_MEMORY):
        raise ValueError(f"platform.npuforge_memory must be 'native' or '{FPGA_MEMORY}', not {choice!r}")
    return choice == FPGA_MEMORY


@dataclass
class _Port:
    addr: Signal
    data: Signal
    en: Signal
    latency: int = 1


class ReplicatedMemory(Elaboratable):
    """A memory with any number of write and read ports, from 1W1R RAMs (module docstring).

    The constructor and port methods take the subset of :class:`~amaranth.lib.memory.Memory`'s
    arguments the core uses: ``write_port()`` (no granularity) and ``read_port(domain="sync")``
    (non-transparent), plus ``read_port(latency=2)`` (the module docstring).

    Parameters
    ----------
    shape : int
        Row width in bits.
    depth : int
        Rows.
    init : sequence
        Must be empty (the core's memories start at zero).
    """

    def __init__(self, *, shape, depth, init=()):
        self._MustUse__silence = True       # a rejected argument must not also warn "created but never used"
        if not isinstance(shape, int) or shape < 1:
            raise ValueError(f"shape must be a positive bit width, not {shape!r}")
        if not isinstance(depth, int) or depth < 1:
            raise ValueError(f"depth must be a positive number of rows, not {depth!r}")
        if list(init):
            raise ValueError("init must be empty: the FPGA memories start at zero")
        self.shape, self.depth = shape, depth
        self.abits = max(1, (depth - 1).bit_length())
        self._writes: list[_Port] = []
        self._reads: list[_Port] = []
        self._MustUse__silence = False

    def write_port(self, *, granularity=None):
        if granularity is not None:
            raise ValueError("ReplicatedMemory has no write granularity (the core's memories use none)")
        n = len(self._writes)
        port = _Port(Signal(self.abits, name=f"w{n}_addr"), Signal(self.shape, name=f"w{n}_data"),
                     Signal(name=f"w{n}_en"))
        self._writes.append(port)
        return port

    def read_port(self, *, domain="sync", transparent_for=(), latency=1):
        if domain != "sync" or tuple(transparent_for):
            raise ValueError("ReplicatedMemory read ports are synchronous and not transparent")
        if latency not in (1, 2):
            raise ValueError(f"ReplicatedMemory read latency must be 1 or 2 cycles, not {latency!r}")
        n = len(self._reads)
        port = _Port(Signal(self.abits, name=f"r{n}_addr"), Signal(self.shape, name=f"r{n}_data"),
                     Signal(name=f"r{n}_en"), latency)
        self._reads.append(port)
        return port

    def elaborate(self, platform):
        m = Module()
        nw, nr = len(self._writes), len(self._reads)
        if nw == 0 or nr == 0:
            raise ValueError(f"ReplicatedMemory needs at least one write and one read port, has {nw} and {nr}")
        bank_data = [[None] * nr for _ in range(nw)]
        # Per read port, with latency 2: high in the cycle after `en`, when the copies' rows arrive.
        arrived = []
        for r, rport in enumerate(self._reads):
            if rport.latency == 2:
                arrived.append(Signal(name=f"r{r}_arrived"))
                m.d.sync += arrived[-1].eq(rport.en)
            else:
                arrived.append(None)
        for w, wport in enumerate(self._writes):
            for r, rport in enumerate(self._reads):
                mem = Memory(shape=self.shape, depth=self.depth, init=[])
                m.submodules[f"bank{w}_copy{r}"] = mem
                wp = mem.write_port()
                rp = mem.read_port(domain="sync", transparent_for=())
                m.d.comb += [wp.addr.eq(wport.addr), wp.data.eq(wport.data), wp.en.eq(wport.en),
                             rp.addr.eq(rport.addr), rp.en.eq(rport.en)]
                bank_data[w][r] = registered_read(m, rp.data, arrived[r], f"bank{w}_copy{r}_data")
        if nw == 1:
            for r, rport in enumerate(self._reads):
                m.d.comb += rport.data.eq(bank_data[0][r])
            return m
        # Live value table: which bank wrote each row last. Later write ports take precedence.
        sel_bits = (nw - 1).bit_length()
        lvt = Memory(shape=sel_bits, depth=self.depth, init=[])
        m.submodules.lvt = lvt
        for w, wport in enumerate(self._writes):
            lp = lvt.write_port()
            m.d.comb += [lp.addr.eq(wport.addr), lp.data.eq(w), lp.en.eq(wport.en)]
        for r, rport in enumerate(self._reads):
            lr = lvt.read_port(domain="sync", transparent_for=())
            m.d.comb += [lr.addr.eq(rport.addr), lr.en.eq(rport.en)]
            sel = registered_read(m, lr.data, arrived[r], f"r{r}_bank")
            out = bank_data[0][r]
            for w in range(1, nw):
                out = Mux(sel == w, bank_data[w][r], out)
            m.d.comb += rport.data.eq(out)
        return m


def registered_read(m, value, arrived, name):
    """``value`` itself, or (with ``arrived``, a latency-2 port) a register loaded from it when a row arrives.

    Not reset, like the block RAM's own output: a port's data means nothing before its first read, and
    a reset would add a row's width of sinks to the core's restart net."""
    if arrived is None:
        return value
    reg = Signal.like(value, name=name, reset_less=True)
    with m.If(arrived):
        m.d.sync += reg.eq(value)
    return reg


def memory_factory(platform):
    """The memory class for ``platform``: :class:`ReplicatedMemory` where it asks for FPGA memories.

    Parameters
    ----------
    platform : object or None
        The platform passed to ``elaborate``; its ``npuforge_memory`` attribute, if any, chooses.

    Returns
    -------
    type
        :class:`amaranth.lib.memory.Memory` or :class:`ReplicatedMemory`.
    """
    return ReplicatedMemory if on_fpga(platform) else Memory
