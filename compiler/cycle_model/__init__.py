"""The fast cycle-exact model: the third fidelity (``--fidelity cycle``).

:func:`simulate` predicts what the RTL (hw/) does with a program: the total cycles, every
performance counter of hw/counters.py (with the same names), and the error code and
instruction index of an illegal program; given a DRAM image it also computes the final
DRAM with the reference simulator's per-instruction code. It follows docs/timing.md
instruction by instruction (see :mod:`.machine`), never clock by clock where nothing
happens; a differential test against the RTL on kernels and random programs keeps it exact.

Two engines apply the same rules: the Python model (:mod:`.machine` and its mixins, the
readable form) and its C++ port (:mod:`.native`, built on first use, about 100 times
faster), which :func:`simulate` uses wherever a C++ compiler is found.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from ...isa.refsim import initial_dram, program_words
from ...isa.spec import ErrorCode
from . import native
from .machine import ACTIVITY_NAMES, CycleLimit, simulate_words

__all__ = ["simulate", "CycleResult", "CycleLimit", "run_bundle_cycle", "UNIT_COUNTERS", "ACTIVITY_NAMES",
           "DEFAULT_MAX_CYCLES"]

DEFAULT_MAX_CYCLES = 50_000_000     # the same watchdog as the RTL runner's

# The per-unit counters an energy estimate can be built on (names as in hw/counters.py).
UNIT_COUNTERS = ("load_busy", "compute_busy", "store_busy", "dram_read_beats", "dram_write_beats",
                 "dram_read_bytes", "dram_write_bytes")


@dataclass
class CycleResult:
    """What the cycle model predicts for one run.

    Attributes
    ----------
    cycles : int
        Cycles with ``busy`` high (``counters["cycles"]``), the RTL's figure.
    counters : dict
        Every field of :class:`npuforge.hw.counters.Counters`, by name.
    error : ErrorCode
        ``ErrorCode.NONE`` for a normal run.
    error_pc : int
        Instruction index of the error (0 for a normal run).
    error_message : str
    dram : numpy.ndarray or None
        Final DRAM image (uint8, ``dram_bytes`` long) when a DRAM image was given.
    wall_s : float
    activity : dict
        Work per unit, counted when an engine accepts a command (:data:`ACTIVITY_NAMES`):
        scratchpad and accumulator row reads / writes, array MACs, rows streamed and weight
        rows loaded, vector and requantiser rows. With the DRAM beats of ``counters``, the
        access counts an energy estimate multiplies by per-access energies.
    """
    cycles: int
    counters: dict
    error: ErrorCode
    error_pc: int
    error_message: str = ""
    dram: np.ndarray | None = field(default=None, repr=False)
    wall_s: float = 0.0
    activity: dict = field(default_factory=dict)


def simulate(program, config, dram=None, *, max_cycles: int = DEFAULT_MAX_CYCLES,
             every_cycle: bool = False, engine: str = "auto") -> CycleResult:
    """Run a program on the cycle model.

    Parameters
    ----------
    program : ProgramImage or sequence of int
        Instruction words (words past the end read as 0, as on the RTL).
    config : HwConfig
    dram : bytes or numpy.ndarray of uint8, optional
        Initial DRAM image. When given, the commands are also executed (reference
        semantics) and ``result.dram`` holds the final image; without it only timing is
        computed, which is what a search loop needs and is faster.
    max_cycles : int
        Watchdog: :class:`CycleLimit` when the run has not ended after this many cycles.
    every_cycle : bool
        Evaluate every cycle one by one instead of jumping between events: much slower, the
        same results (tests hold the fast paths to it). Python engine only.
    engine : {"auto", "native", "python"}
        ``native``: the C++ engine (:mod:`.native`, built on first use); ``python``: the
        Python model; ``auto``: native where it builds, else Python (the same figures).

    Returns
    -------
    CycleResult

    Raises
    ------
    CycleLimit
        The run did not end within ``max_cycles``.
    ValueError
        A program that does not fit the instruction memory, a malformed DRAM image, or an
        unknown engine.
    ImageError
        An image made for another config.
    NativeUnavailable
        ``engine="native"`` where the C++ engine cannot be built.
    """
    t0 = time.perf_counter()
    if engine not in ("auto", "native", "python"):
        raise ValueError(f"engine: must be auto, native or python, got {engine!r}")
    words = program_words(program, config)
    image = initial_dram(dram, config) if dram is not None else None
    if engine == "native" or (engine == "auto" and not every_cycle and native.available()):
        if every_cycle:
            raise ValueError("every_cycle: only the Python engine evaluates every cycle")
        return _simulate_native(words, config, image, max_cycles, t0)
    sim = simulate_words(words, config, image, max_cycles=max_cycles, every_cycle=every_cycle)
    return CycleResult(sim.T, dict(sim.c), sim.error, sim.error_pc if sim.error != ErrorCode.NONE else 0,
                       sim.error_msg, image, time.perf_counter() - t0, dict(sim.activity))


def _simulate_native(words, config, image, max_cycles, t0) -> CycleResult:
    from ...isa.refsim_units import AddrRangeError, Machine
    r = native.simulate_native(words, config, Machine(config, image) if image is not None else None,
                               max_cycles=max_cycles)
    stop, pc, entry = r["stop"], r["stop_pc"], r["entry"]
    if stop == native.STOP_LIMIT:
        raise CycleLimit(f"cycle model: not done after max_cycles={max_cycles}")
    if stop == native.STOP_MODEL:
        raise RuntimeError(f"cycle model (native): no progress possible after cycle {pc} and no deadlock "
                           f"detected (model error)")
    error, message = ErrorCode.NONE, ""
    if stop == native.STOP_DECODE:
        error, message = entry
    elif stop == native.STOP_FETCH:
        error, message = ErrorCode.PC_RANGE, f"fetch outside the instruction memory (imem_words={config.imem_words})"
    elif stop == native.STOP_BRANCH:
        error = ErrorCode.PC_RANGE
        message = f"dbnz: branch target {entry.args['target']} is outside the instruction memory"
    elif stop == native.STOP_ADDR:
        error = ErrorCode.ADDR_RANGE
        try:
            entry.resolve(r["regs"])
            message = "address out of range"
        except AddrRangeError as e:
            message = str(e)
    elif stop == native.STOP_DEADLOCK:
        error, message = ErrorCode.DEADLOCK, "every unit waits on a token"
    counters = r["counters"]
    return CycleResult(counters["cycles"], counters, error, pc if error != ErrorCode.NONE else 0, message,
                       image, time.perf_counter() - t0, r["activity"])


def run_bundle_cycle(bundle, options: dict):
    """The ``cycle`` fidelity for :func:`npuforge.run.run_bundle`.

    Parameters
    ----------
    bundle : Bundle
    options : dict
        ``max_cycles`` (int): watchdog (default :data:`DEFAULT_MAX_CYCLES`); ``power``
        (bool, default True): estimate energy (:mod:`.energy`).

    Returns
    -------
    BackendResult
        ``extra`` holds ``model_wall_s`` (the model alone), ``cycles_per_s`` and ``activity``
        (access counts, see :class:`CycleResult`); with ``power``, the RTL's energy keys
        (``energy_pj``, ``power_mw``, ``energy_breakdown_pj``, ...) estimated from the
        config's toggle table, labelled ``energy_fidelity: "cycle"``, and the RTL-shaped
        ``activity_estimate``; or ``energy_note`` saying why there is no estimate.

    Raises
    ------
    ProgramStopped
        The program stops with an error (code and instruction index as the RTL reports them).
    CycleLimit
        The watchdog fired.
    """
    from ...run import BackendResult, ProgramStopped
    config = bundle.config
    bundle.image.check_config(config, str(bundle.path / "program.bin"))
    r = simulate(bundle.image, config, bundle.dram, max_cycles=int(options.get("max_cycles", DEFAULT_MAX_CYCLES)))
    if r.error != ErrorCode.NONE:
        raise ProgramStopped(r.error.name, r.error_pc, None, r.error_message or f"stopped with {r.error.name}")
    extra = {"model_wall_s": round(r.wall_s, 6),
             "cycles_per_s": round(r.cycles / r.wall_s) if r.wall_s > 0 else 0,
             "activity": r.activity}
    if options.get("power", True):
        extra.update(_energy_extra(r, config))
    return BackendResult(r.dram, r.cycles, r.counters, extra)


def _energy_extra(r: CycleResult, config) -> dict:
    """The RTL's energy keys, estimated (``energy_fidelity: cycle``); a note when no table exists."""
    from .energy import estimate_energy
    try:
        est = estimate_energy(r.activity, r.counters, config)
    except (FileNotFoundError, ValueError) as e:
        return {"energy_note": str(e)}
    # "activity" stays the cycle model's access counts; the RTL-shaped estimate goes beside it.
    est["activity_estimate"] = est.pop("activity")
    return est
