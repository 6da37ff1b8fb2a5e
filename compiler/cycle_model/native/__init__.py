"""The cycle model's native engine: machine.cpp, built on first use and called through ctypes.

The C++ engine applies the rules of the Python model (:mod:`..machine`, :mod:`..dispatch`,
:mod:`..engines`, :mod:`..dma`) statement for statement; tests hold the two to the same
cycles, counters, activity and errors, and both to the RTL. The Python model stays the
readable specification and the fallback where no C++ compiler is installed (the Verilator
flow needs one anyway).

The library is compiled with the system C++ compiler (``$CXX``, else ``c++`` / ``g++``) into
``build/cycle_model/<source hash>.so`` once and reused; a build is written to a temporary
name and renamed, so parallel test workers never load a half-written file.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
import warnings
from functools import lru_cache
from pathlib import Path

import numpy as np

from ....hw.compute import compute_timing
from ....hw.counters import COUNTER_NAMES
from ....hw.requant import Requant
from ....isa.refsim_units import decode_entry
from ....isa.spec import NUM_REGS, Opcode
from ..engines import ACTIVITY_NAMES, VECTOR_ROWS

__all__ = ["available", "simulate_native", "NativeUnavailable", "library_path"]

_SOURCE = Path(__file__).with_name("machine.cpp")
_FLAGS = ["-O2", "-std=c++17", "-shared", "-fPIC"]

# Column order of the instruction table and of the config vector (machine.cpp's enums Col and
# ConfigIdx); npf_abi() returns their lengths, checked on load.
TABLE_COLS = ("kind", "op", "unit|rd", "pops|rs", "pushes|imm", "accumulate|target", "rclass", "f0", "f1",
              "f2", "f3", "rows", "len", "stride", "elem", "is_acc", "qreg", "cclass", "requant",
              "vector_activity")
CONFIG_FIELDS = ("rows", "cols", "queue_depth", "token_depth", "dram_bytes_per_cycle", "dram_latency",
                 "imem_words", "spad_rows", "acc_rows", "spad_row_bytes", "dram_bytes", "requant_latency",
                 "compute_tail", "vector_stages", "dispatch_stages", "op_nop", "op_halt", "op_fence", "op_seti",
                 "op_addi", "op_dbnz", "max_cycles", "log")
# Stop kinds of machine.cpp (enum Stop).
(STOP_FINISHED, STOP_DECODE, STOP_FETCH, STOP_BRANCH, STOP_ADDR, STOP_DEADLOCK, STOP_LIMIT,
 STOP_MODEL) = range(8)
_LOG_FIELDS = 6     # pc, mem, dram, src, dst, mult of each accepted command
_RCLASS = {"dma": 0, "preload": 1, "compute": 2}
_CCLASS = {Opcode.PRELOAD: 0, Opcode.MATMUL: 1, Opcode.VADD: 3, Opcode.VMAX: 3}    # else 2: one source row


class NativeUnavailable(RuntimeError):
    """No C++ compiler, or the build failed: the Python model runs instead."""


def library_path() -> Path:
    """Where the compiled engine for the current source lives."""
    from ....cosim.build import repo_build_dir
    digest = hashlib.sha256(_SOURCE.read_bytes() + " ".join(_FLAGS).encode()).hexdigest()[:16]
    return repo_build_dir() / "cycle_model" / f"machine-{digest}.so"


def _compiler() -> str | None:
    for name in (os.environ.get("CXX"), "c++", "g++", "clang++"):
        if name and shutil.which(name):
            return name
    return None


_FAILED: list = []      # the NativeUnavailable of a failed build or load: not retried on every call


def _library():
    if _FAILED:
        raise _FAILED[0]
    try:
        return _load_library()
    except NativeUnavailable as e:
        _FAILED.append(e)
        raise


def reset() -> None:
    """Forget the loaded library and any failure (tests; after installing a compiler)."""
    _FAILED.clear()
    _load_library.cache_clear()


@lru_cache(maxsize=1)
def _load_library():
    path = library_path()
    if not path.exists():
        cxx = _compiler()
        if cxx is None:
            raise NativeUnavailable("no C++ compiler found ($CXX, c++, g++, clang++)")
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=path.parent)
        os.close(fd)
        try:
            try:
                proc = subprocess.run([cxx, *_FLAGS, "-o", tmp, str(_SOURCE)], capture_output=True, text=True)
            except OSError as e:
                raise NativeUnavailable(f"{cxx} could not run: {e}") from None
            if proc.returncode != 0:
                raise NativeUnavailable(f"{cxx} failed on {_SOURCE}:\n{proc.stderr[-2000:]}")
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    try:
        lib = ctypes.CDLL(str(path))
    except OSError as e:
        raise NativeUnavailable(f"{path}: cannot be loaded ({e}); delete it to rebuild") from None
    i64p = ctypes.POINTER(ctypes.c_int64)
    lib.npf_run.restype = ctypes.c_void_p
    lib.npf_run.argtypes = [i64p, ctypes.c_int64, i64p, ctypes.c_int64, i64p, i64p, i64p, i64p]
    lib.npf_log.argtypes = [ctypes.c_void_p, i64p]
    lib.npf_free.argtypes = [ctypes.c_void_p]
    lib.npf_abi.restype = ctypes.c_int64
    if lib.npf_abi() != len(TABLE_COLS) * 1000 + len(CONFIG_FIELDS):
        raise NativeUnavailable(f"{path}: table layout differs from native/__init__.py")
    return lib


_WARNED: set = set()


def available() -> bool:
    """Whether the native engine can run here (builds it on first call); says once why not."""
    try:
        _library()
    except NativeUnavailable as e:
        if str(e) not in _WARNED:
            _WARNED.add(str(e))
            warnings.warn(f"cycle model: the native engine is unavailable, the Python model (about 100x "
                          f"slower, same results) runs instead: {e}", RuntimeWarning, stacklevel=2)
        return False
    return True


def _row(pc: int, word: int, config) -> tuple[list[int], object]:
    """One table row and what the Python side keeps of the instruction (Prepared, or the decode error)."""
    row = [0] * len(TABLE_COLS)
    kind, entry = decode_entry(pc, word, config)
    if kind == "scalar":
        args = entry.args
        row[1] = entry.op.value
        row[2:6] = args.get("rd", 0), args.get("rs", 0), args.get("imm", 0), args.get("target", 0)
        return row, entry
    if kind != "queue":
        row[0], row[1] = 2, int(kind.value)
        return row, (kind, entry)
    p, op = entry, entry.op
    row[0], row[1] = 1, op.value
    row[2] = p.unit
    row[3] = sum(1 << ch for ch in p.pops)
    row[4] = sum(1 << ch for ch in p.pushes)
    row[6] = _RCLASS[p.kind]
    f = p.f
    if p.kind == "dma":
        row[7:17] = f[0], f[1], f[2], f[3], f[4], f[5], f[6], f[7], int(f[8]), f[9]     # f[7]: element bytes
        row[18] = int(op == Opcode.STORE_ACC8)
    elif p.kind == "preload":
        row[7:9] = f
        row[17] = _CCLASS[op]
    else:
        row[7:12] = f[0], f[1], f[2], f[3], f[4]
        row[5] = int(f[5])
        row[16] = f[7]
        row[17] = _CCLASS.get(op, 2)
        if op in VECTOR_ROWS:
            row[19] = ACTIVITY_NAMES.index(VECTOR_ROWS[op])
    return row, p


@lru_cache(maxsize=64)
def _table(words: tuple[int, ...], config) -> tuple[np.ndarray, tuple]:
    """The instruction table of a program (one row per word and one for the word 0 past its end)."""
    rows, kept = [], []
    for pc, word in enumerate((*words, 0)):
        row, what = _row(pc, word, config)
        rows.append(row)
        kept.append(what)
    return np.ascontiguousarray(np.array(rows, dtype=np.int64)), tuple(kept)


def _compute_tail(config) -> int:
    """Cycles from a compute command's last slot to its ``done`` (hw/compute.py:compute_timing)."""
    tails = {done - slots for op in (Opcode.PRELOAD, Opcode.MATMUL, Opcode.VADD)
             for slots, done in [compute_timing(config, op, 3)]}
    if len(tails) != 1:
        raise NativeUnavailable(f"compute_timing has a different tail per op {tails}; machine.cpp assumes one")
    return tails.pop()


def _config_vector(config, max_cycles: int, log: bool) -> np.ndarray:
    values = dict(rows=config.rows, cols=config.cols, queue_depth=config.queue_depth,
                  token_depth=config.token_depth, dram_bytes_per_cycle=config.dram_bytes_per_cycle,
                  dram_latency=config.dram_latency, imem_words=config.imem_words, spad_rows=config.spad_rows,
                  acc_rows=config.acc_rows, spad_row_bytes=config.spad_row_bytes, dram_bytes=config.dram_bytes,
                  requant_latency=Requant.LATENCY, compute_tail=_compute_tail(config),
                  vector_stages=config.vector_stages, dispatch_stages=config.dispatch_stages,
                  op_nop=Opcode.NOP.value, op_halt=Opcode.HALT.value, op_fence=Opcode.FENCE.value,
                  op_seti=Opcode.SETI.value, op_addi=Opcode.ADDI.value, op_dbnz=Opcode.DBNZ.value,
                  max_cycles=max_cycles, log=int(log))
    return np.array([values[name] for name in CONFIG_FIELDS], dtype=np.int64)


def _ptr(a: np.ndarray):
    return a.ctypes.data_as(ctypes.POINTER(ctypes.c_int64))


def simulate_native(words: tuple[int, ...], config, machine=None, *, max_cycles: int):
    """Run the native engine; see :func:`npuforge.compiler.cycle_model.simulate`.

    Parameters
    ----------
    words : tuple of int
    config : HwConfig
    machine : npuforge.isa.refsim_units.Machine, optional
        When given, every accepted command is executed on it in acceptance order (the order
        the Python model executes them in).
    max_cycles : int

    Returns
    -------
    dict
        ``stop`` (a STOP_* kind), ``stop_pc``, ``counters``, ``activity``, ``regs``, and the
        decode entry of the stop pc (``entry``) for error messages.

    Raises
    ------
    NativeUnavailable
        The engine cannot be built here.
    """
    lib = _library()
    table, kept = _table(words, config)
    cfg = _config_vector(config, max_cycles, machine is not None)
    status = np.zeros(3, np.int64)
    counters = np.zeros(len(COUNTER_NAMES), np.int64)
    activity = np.zeros(len(ACTIVITY_NAMES), np.int64)
    regs = np.zeros(NUM_REGS, np.int64)
    handle = lib.npf_run(_ptr(table), len(words), _ptr(cfg), len(cfg), _ptr(status), _ptr(counters),
                         _ptr(activity), _ptr(regs))
    if not handle:
        raise NativeUnavailable("the native engine refused the config vector")
    try:
        if machine is not None and status[2]:
            log = np.empty(int(status[2]), np.int64)
            lib.npf_log(handle, _ptr(log))
            # One command object per pc, its resolved fields set before each execution (the
            # execute functions keep nothing of it): a third of the cost of a fresh one each time.
            commands = {}
            for pc, mem, dram, src, dst, mult in log.reshape(-1, _LOG_FIELDS).tolist():
                cmd = commands.get(pc)
                if cmd is None:
                    cmd = commands[pc] = kept[pc].command()
                cmd.mem, cmd.dram, cmd.src, cmd.dst, cmd.mult = mem, dram, src, dst, mult
                cmd.execute(machine, cmd)
    finally:
        lib.npf_free(handle)
    stop_pc = int(status[1])
    entry = kept[min(stop_pc, len(words))] if 0 <= stop_pc else None
    return dict(stop=int(status[0]), stop_pc=stop_pc, entry=entry,
                counters=dict(zip(COUNTER_NAMES, counters.tolist())),
                activity=dict(zip(ACTIVITY_NAMES, activity.tolist())), regs=regs.tolist())
