"""Interfaces between the NPU's blocks: resolved commands, engine handshakes, memory and DRAM ports.

These are the contracts the block authors build against; every width comes from
the ISA declaration or the config.

Engine handshake (load, store and compute engines)
--------------------------------------------------
An engine has ``cmd`` (the resolved command), ``cmd_valid``/``cmd_ready``,
``done`` and ``busy``:

- A command is accepted in a cycle where ``cmd_valid & cmd_ready``.
  ``cmd_ready`` never depends combinationally on ``cmd_valid``.
- ``done`` is high for exactly one cycle per accepted command, in acceptance
  order, once all of that command's writes are complete: a memory read issued
  in the cycle after ``done`` sees them (for the store engine: every DRAM write
  beat has been accepted by the DRAM port).
- ``busy`` is high while an accepted command has not yet signalled ``done``.
- An engine may accept command i+1 before command i is done (pipelining), but
  must then give exactly the results of executing them one after the other.
  The sequencer in front of it offers command i+1 early only when that cannot change
  the outcome of isa/execution.py's one-at-a-time model (rules in hw/sequencer.py).

Memory ports (synchronous, one cycle)
-------------------------------------
Seen from the block that uses the port: ``addr``/``en`` out, and for reads ``data``
in, valid in the cycle after ``en``; for writes ``data``/``en`` out. Scratchpad rows
are ``spad_row_bytes`` int8 lanes (lane i in bits [8i, 8i+8)); accumulator rows are
``cols`` int32 lanes (lane i in bits [32i, 32i+32)).

DRAM port (the core's only way out; an FPGA SoC or the simulation's DRAM model serves it)
------------------------------------------------------------------------------------------
Beats of ``B = dram_bytes_per_cycle`` bytes. ``req_addr`` is a beat index (byte address
// B). A request is accepted when ``req_valid & req_ready``; writes carry ``req_wdata``
and a byte strobe ``req_wstrb``; each read request gets exactly one ``resp_valid`` beat,
in request order, with ``resp_rdata`` (byte j of the beat in bits [8j, 8j+8)).
The core must always accept a response (no back-pressure on responses).
"""

from amaranth.hdl import signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from ..isa.spec import Opcode

__all__ = ["DmaCmd", "ComputeCmd", "engine_signature", "read_port_signature", "write_port_signature",
           "dram_port_signature", "dma_row_geometry", "ROW_ADDR_BITS", "PC_BITS"]

ROW_ADDR_BITS = 16   # scratchpad / accumulator row addresses (the ISA's MEM_OFF_BITS)
PC_BITS = 16         # instruction index (imem_words <= 65536)


class DmaCmd(data.Struct):
    """A load or store instruction with its registers resolved to absolute values."""
    op: Opcode
    mem: ROW_ADDR_BITS      # first scratchpad / accumulator row
    dram: 32                # DRAM byte address of the first row
    rows: 16
    len: 8                  # elements per row
    stride: 24              # DRAM bytes between rows
    mult: signed(32)        # STORE_ACC8: requant multiplier (value of qreg)
    shift: 6
    zp: signed(8)
    relu: 1


class ComputeCmd(data.Struct):
    """A compute-queue instruction with its registers resolved to absolute values."""
    op: Opcode
    src: ROW_ADDR_BITS      # scratchpad rows (PRELOAD, MATMUL) or accumulator rows (vector ops)
    dst: ROW_ADDR_BITS      # accumulator rows
    rows: 16
    accumulate: 1
    mult: signed(32)        # VQUANT: requant multiplier (value of qreg)
    shift: 6
    zp: signed(8)
    relu: 1


def engine_signature(cmd_layout) -> wiring.Signature:
    """The engine side of the handshake above."""
    return wiring.Signature({
        "cmd": In(cmd_layout),
        "cmd_valid": In(1),
        "cmd_ready": Out(1),
        "done": Out(1),
        "busy": Out(1),
    })


def read_port_signature(addr_bits: int, data_bits: int) -> wiring.Signature:
    """A synchronous read port as seen by its user (flip it for the memory side)."""
    return wiring.Signature({"addr": Out(addr_bits), "en": Out(1), "data": In(data_bits)})


def write_port_signature(addr_bits: int, data_bits: int) -> wiring.Signature:
    """A write port as seen by its user (flip it for the memory side)."""
    return wiring.Signature({"addr": Out(addr_bits), "en": Out(1), "data": Out(data_bits)})


def dma_row_geometry(config) -> tuple[int, int]:
    """(row_bytes, max_beats) of the DMA engines: the most bytes one row moves (a scratchpad row or
    an accumulator row of int32), and the most DRAM beats such a row can touch at any alignment."""
    b = config.dram_bytes_per_cycle
    row_bytes = max(config.spad_row_bytes, 4 * config.cols)
    return row_bytes, (b - 1 + row_bytes + b - 1) // b


def dram_port_signature(config) -> wiring.Signature:
    """The DRAM port as seen by the core (flip it for the DRAM model or an SoC bridge)."""
    b = config.dram_bytes_per_cycle
    return wiring.Signature({
        "req_valid": Out(1),
        "req_ready": In(1),
        "req_write": Out(1),
        "req_addr": Out(32),
        "req_wdata": Out(8 * b),
        "req_wstrb": Out(b),
        "resp_valid": In(1),
        "resp_rdata": In(8 * b),
    })
