"""The cocotb test bench: runs a list of jobs on one simulator process.

Started by :func:`npuforge.cosim.runner.run_rtl` through ``cocotb_tools.runner`` with
``+NPUFORGE_JOBS=<manifest.json>``. The simulator's cwd is the run folder, which holds
``job<i>.prog.bin`` and ``job<i>.dram.bin`` for every job. For each job the bench
(driver) moves them to the names the simulation top loads, pulses ``rst``, ``load`` and ``go``,
waits for ``finished`` without stepping the clock (the clock runs in the HDL), reads the
error, the error index and the counters (monitor), pulses ``dump`` and converts the
written DRAM range to ``job<i>.out.npy``. Results go to ``results.json``; the caller
compares them with the reference simulator (checker).
"""

from __future__ import annotations

import json
import os
import time

import cocotb
import numpy as np
from cocotb.triggers import First, RisingEdge, Timer

from ..hw.counters import Counters
from ..isa.spec import ErrorCode
from .hexio import read_beats_hex
from .simtop import DRAM_IN_FILE, DRAM_OUT_FILE, PROG_FILE

# The HDL clock has a 2 ns period with rising edges at odd ns; the bench changes inputs
# only at even ns, between edges.
_PERIOD_NS = 2
# While a job runs, the bench wakes up every this many cycles to write progress.txt (the
# runner shows it); far too rarely to cost anything.
_PROGRESS_CYCLES = 2_000_000


def _counter_fields():
    from amaranth.hdl import Shape
    from amaranth.lib import data
    layout = data.Layout.cast(Counters)
    return [(name, f.offset, Shape.cast(f.shape).width) for name, f in layout]


class NpuDriver:
    """Drives the simulation top's load / go / dump pins and reads its result pins."""

    def __init__(self, dut, beat_bytes: int):
        self.dut = dut
        self.beat_bytes = beat_bytes
        self.fields = _counter_fields()

    async def pulse(self, pin, cycles: int = 1):
        pin.value = 1
        await Timer(_PERIOD_NS * cycles, "ns")
        pin.value = 0
        await Timer(_PERIOD_NS, "ns")

    async def reset(self):
        await self.pulse(self.dut.rst, 2)

    def cycles(self) -> int:
        name, off, width = next(f for f in self.fields if f[0] == "cycles")
        return (int(self.dut.counters.value) >> off) & ((1 << width) - 1)

    async def run(self, max_cycles: int, setup_cycles: int, prog_words: int, progress=None):
        dut = self.dut
        dut.max_cycles.value = max_cycles
        dut.prog_words.value = prog_words
        # A run stopped by an error may leave an engine mid-command, still writing memories:
        # reset the whole top before the memories are cleared and loaded.
        await self.reset()
        await self.pulse(dut.load)
        t_go = time.perf_counter()
        await self.pulse(dut.go)
        # The watchdog in the HDL stops the run; this limit only guards against a broken top.
        waited, limit = 0, max_cycles + setup_cycles + 100
        finished = RisingEdge(dut.finished)
        while True:
            fired = await First(finished, Timer(_PERIOD_NS * _PROGRESS_CYCLES, "ns"))
            if fired is finished:
                break
            waited += _PROGRESS_CYCLES
            if waited > limit:
                raise RuntimeError(f"the simulation top did not finish within {limit} cycles")
            if progress is not None:
                progress(self.cycles())
        t_done = time.perf_counter()
        await Timer(1, "ns")
        raw = int(dut.counters.value)
        counters = {name: (raw >> off) & ((1 << width) - 1) for name, off, width in self.fields}
        result = {
            "error": ErrorCode(int(dut.error.value)).name,
            "error_pc": int(dut.error_pc.value),
            "timed_out": bool(int(dut.timed_out.value)),
            "counters": counters,
            "cycles": counters["cycles"],
            # from go to finished: the instruction memory copy (imem_words cycles) and the run
            "run_s": t_done - t_go,
        }
        lo, hi = int(dut.dram_wr_lo.value), int(dut.dram_wr_hi.value)
        result["wr_range"] = [lo, hi] if lo <= hi else None
        if lo <= hi:
            await self.pulse(dut.dump)
        return result


@cocotb.test()
async def run_jobs(dut):
    """Run every job of the manifest and write results.json."""
    with open(cocotb.plusargs["NPUFORGE_JOBS"]) as f:
        manifest = json.load(f)
    drv = NpuDriver(dut, manifest["beat_bytes"])
    dut.load.value = 0
    dut.go.value = 0
    dut.dump.value = 0
    dut.rst.value = 0
    dut.max_cycles.value = 0
    dut.prog_words.value = 0
    await Timer(_PERIOD_NS, "ns")
    results = []
    for i, job in enumerate(manifest["jobs"]):
        t0 = time.perf_counter()
        os.replace(f"job{i}.prog.bin", PROG_FILE)
        os.replace(f"job{i}.dram.bin", DRAM_IN_FILE)
        t1 = time.perf_counter()
        def progress(cycles, i=i):
            with open("progress.tmp", "w") as f:
                f.write(f"job {i + 1}/{len(manifest['jobs'])}: {cycles:,} cycles")
            os.replace("progress.tmp", "progress.txt")

        res = await drv.run(job["max_cycles"], manifest["setup_cycles"], job["copy_words"], progress)
        t2 = time.perf_counter()
        if res["wr_range"] is not None:
            # A ranged $writememh writes no address line: the range is the one read above.
            lo, hi = res["wr_range"]
            start, beats = read_beats_hex(DRAM_OUT_FILE, drv.beat_bytes, start=lo)
            if start != lo or len(beats) != hi - lo + 1:
                raise RuntimeError(f"job {i}: dump holds beats {start}+{len(beats)}, expected {lo}..{hi}")
            np.save(f"job{i}.out.npy", beats)
            os.remove(DRAM_OUT_FILE)
        res["sim_wall_s"] = t2 - t1
        res["job_wall_s"] = time.perf_counter() - t0
        results.append(res)
    with open("results.json", "w") as f:
        json.dump(results, f)
