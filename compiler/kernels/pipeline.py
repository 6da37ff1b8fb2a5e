"""A three-stage tile pipeline (load -> compute -> store) over accumulator buffer sets.

The vector kernels (relu, add, maxpool) work on int8 data widened into accumulator
rows: each tile is loaded into a *buffer set*, transformed in place by vector
instructions and stored back as int8. With two sets, the load of tile ``i+1`` and
the store of tile ``i-1`` overlap the compute of tile ``i``.

Token protocol, per tile ``i`` (set ``i mod sets``)::

    load     pop C2L  ... loads ...   push L2C
    compute  pop L2C  ... ops ...     push C2S
    compute  pop S2C, push C2L        (token only: the set of tile i-sets+1 is stored, free)
    store    pop C2S  ... stores ...  push S2C

Seeds: compute pushes one ``C2L`` and the store ``sets - 1`` ``S2C`` at the start. The
load of tile ``i`` then takes the token given after tile ``i-1``'s ops, which follows
the store of tile ``i - sets``: the last user of its set. The end drains both, so
the pipeline leaves the counters as it found them.
"""

from __future__ import annotations

from typing import Callable, Sequence, Union

from .common import Emitter

__all__ = ["Pipeline", "Phase"]

# A phase is a list of (mnemonic, operands) whose first instruction pops and last pushes,
# or a callable that emits anything (then token-only instructions bracket it).
Phase = Union[Sequence[tuple[str, dict]], Callable[[], None]]


class Pipeline:
    """Emit tiles through the load/compute/store pipeline.

    Parameters
    ----------
    em : Emitter
    set_rows : int
        Accumulator rows of one buffer set; set ``s`` starts at row ``s * set_rows``.
    sets : int
        1 or 2 buffer sets.

    Attributes
    ----------
    r_set : int
        Register holding the first accumulator row of the current tile's set.
    """

    def __init__(self, em: Emitter, set_rows: int, sets: int = 2):
        if sets not in (1, 2):
            raise ValueError(f"sets must be 1 or 2, got {sets}")
        self.em, self.sets, self.set_rows = em, sets, set_rows
        self.r_set = em.reg()
        self._other = em.reg() if sets == 2 else None
        self._tmp = em.reg() if sets == 2 else None

    def begin(self) -> None:
        em = self.em
        em.set(self.r_set, 0, "buffer set")
        if self.sets == 2:
            em.set(self._other, self.set_rows, "second buffer set")
        em.tok_compute("push_prev", comment="first buffer set free")
        for _ in range(self.sets - 1):
            em.tok_store("push_prev", comment="seed")

    def tile(self, loads: Phase, ops: Phase, stores: Phase) -> None:
        """Emit one tile's three phases on the current set, then move to the next set."""
        em = self.em
        self._phase(loads, ("pop_next",), ("push_next",), em.tok_load)
        if isinstance(ops, Sequence) and not ops:
            em.tok_compute("pop_prev", "push_next")
        else:
            self._phase(ops, ("pop_prev",), ("push_next",), em.tok_compute)
        em.tok_compute("pop_next", "push_prev", comment="an older set is stored: free for loading")
        self._phase(stores, ("pop_prev",), ("push_prev",), em.tok_store)
        if self.sets == 2:
            em.swap(self.r_set, self._other, self._tmp)

    def _phase(self, phase: Phase, first, last, token) -> None:
        if callable(phase):
            token(*first)
            phase()
            token(*last)
        else:
            self.em.emit_group(phase, first, last)

    def end(self) -> None:
        em = self.em
        em.tok_load("pop_next", comment="drain")
        for _ in range(self.sets - 1):
            em.tok_compute("pop_next", comment="drain")
        em.free(*(r for r in (self.r_set, self._other, self._tmp) if r is not None))
