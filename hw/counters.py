"""The core's performance counters: one Struct port, every field 48 bits.

All counters are cleared by ``start`` and stop counting when ``done`` rises, so they hold
the figures of the last run until the next ``start``.

- ``cycles``: cycles with ``busy`` high (from the cycle after ``start`` up to the cycle
  before ``done`` rises).
- ``instructions``: instructions that left the dispatcher (scalar ones and the final
  ``halt`` included; the reference simulator's ``dispatched`` on a normal run).
- ``<unit>_busy``: cycles the unit's engine had an accepted command not yet done.
- ``<unit>_token_stall``: cycles the unit's engine was idle while the unit waited on a
  token (a pop for the instruction it holds, or a push of a finished one).
- ``dispatch_full_stall``: cycles the dispatcher waited on a full queue.
- ``dispatch_fence_stall``: cycles the dispatcher waited on a ``fence``.
- ``dram_read_bytes`` / ``dram_write_bytes``: useful bytes moved, ``rows * len * element
  bytes`` per load / store instruction, counted when the engine accepts it (equal to the
  reference simulator's figures).
- ``dram_read_beats`` / ``dram_write_beats``: requests accepted by the DRAM port.
"""

from amaranth.lib import data

__all__ = ["Counters", "COUNTER_BITS", "COUNTER_NAMES", "UNITS"]

COUNTER_BITS = 48
UNITS = ("load", "compute", "store")


class Counters(data.Struct):
    """Performance counters of one run (see the module docstring)."""
    cycles: COUNTER_BITS
    instructions: COUNTER_BITS
    load_busy: COUNTER_BITS
    load_token_stall: COUNTER_BITS
    compute_busy: COUNTER_BITS
    compute_token_stall: COUNTER_BITS
    store_busy: COUNTER_BITS
    store_token_stall: COUNTER_BITS
    dispatch_full_stall: COUNTER_BITS
    dispatch_fence_stall: COUNTER_BITS
    dram_read_bytes: COUNTER_BITS
    dram_write_bytes: COUNTER_BITS
    dram_read_beats: COUNTER_BITS
    dram_write_beats: COUNTER_BITS


COUNTER_NAMES = tuple(data.Layout.cast(Counters).members)
