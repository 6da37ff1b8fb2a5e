"""Toggle and SRAM-access probes: which signals are counted, and the Verilog that counts them.

The probes are simulation-only. They live in the Verilog test bench around the simulation
top (never in the core) and reach the core's registers by hierarchical reference, so the
synthesizable design does not change when counting is on.

What is counted (the *activity* of a run):

- ``toggles[group]``: bit flips of every flip-flop of a signal group, one sample per clock
  edge while the core is busy. Groups follow the module hierarchy (:data:`GROUP_RULES`):
  ``array`` (PE activation, weight and partial-sum registers), ``scratchpad``,
  ``accumulator``, ``dma`` (load/store engines, DRAM arbiter), ``vector`` (vector unit and
  requantiser) and ``control`` (dispatcher, queues, sequencers, tokens, compute control).
- ``mac_operand_toggles``: bit flips of the multiplier operands of every PE (the ``a``
  activation and ``w`` weight registers), a proxy for the multiplier's switching
  (RECIPES.md sec. 9: register toggles alone mis-estimate the MAC energy).
- ``sram[memory] = (reads, writes)``: clock edges with a read / write port enabled.
- ``cycles``: edges counted (the core's ``busy`` cycles).

Exact definition (the VCD cross-check in ``tests/cosim/test_toggles.py`` recomputes it):
let ``x[k]`` be a signal's value just before clock edge ``k``. At every edge with
``busy[k] == 1`` the counter adds ``popcount(x[k] ^ x[k-1])``; an access counter adds
``en[k]``. Counters clear on ``load`` and are written (one JSON line per job, file
:data:`ACTIVITY_FILE`) at the edge where ``finished`` rises.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["Probe", "SramPort", "find_probes", "probe_verilog", "GROUPS", "GROUP_RULES", "ACTIVITY_FILE",
           "parse_activity_line"]

ACTIVITY_FILE = "activity.jsonl"
GROUPS = ("array", "scratchpad", "accumulator", "dma", "vector", "control")

# First match wins; paths are instance paths below the core ("datapath.spad", ...).
GROUP_RULES = (
    ("datapath.compute_engine.array", "array"),
    ("datapath.compute_engine.vector", "vector"),
    ("datapath.store_engine.requant", "vector"),
    ("datapath.spad", "scratchpad"),
    ("datapath.acc", "accumulator"),
    ("datapath.load_engine", "dma"),
    ("datapath.store_engine", "dma"),
    ("datapath.arbiter", "dma"),
    ("", "control"),
)
# The performance counters are instrumentation (a product would power-gate or omit them).
_SKIP_FLOPS = {("", "counters")}

_MODULE_RE = re.compile(r"^module (\\\S+ |\w+)\s*\(", re.M)
_FLOP_RE = re.compile(r"^  always @\(posedge clk\)\n    (\\\S+ |\w+) <= ", re.M)
_REG_RE = re.compile(r"^  reg (?:\[(\d+):0\] )?(\\\S+ |\w+)(?: =[^;]*)?;", re.M)
_MEM_RE = re.compile(r"^  reg \[(\d+):0\] (\\\S+ |\w+) \[(\d+):0\];", re.M)
_WPORT_RE = re.compile(r"^    if \((\\\S+ |\w+)\)\n      (\\\S+ |\w+)\[[^\n]*\] <= ", re.M)
_RPORT_RE = re.compile(r"^    if \((\\\S+ |\w+)\) begin\n      (?:\\\S+ |\w+) <= (\\\S+ |\w+)\[", re.M)


@dataclass(frozen=True)
class Probe:
    """One flip-flop: ``path`` is its instance path below the core, ``name`` its Verilog name."""
    group: str
    path: str
    name: str
    width: int

    @property
    def is_mac_operand(self) -> bool:
        return ".pe_" in f".{self.path}" and self.name in ("a", "w")


@dataclass(frozen=True)
class SramPort:
    """One enable of a memory port: ``memory`` is ``<path>.<array name>``."""
    memory: str
    kind: str           # "read" or "write"
    path: str
    enable: str
    width: int
    depth: int


def _plain(name: str) -> str:
    return name.strip().lstrip("\\")


def _group(path: str) -> str:
    for prefix, group in GROUP_RULES:
        if path == prefix or path.startswith(prefix + ".") or prefix == "":
            return group
    raise AssertionError("the last rule matches everything")


def find_probes(verilog: str, top: str) -> tuple[list[Probe], list[SramPort]]:
    """The flip-flops and SRAM port enables of the core in the simulation top's Verilog.

    Parameters
    ----------
    verilog : str
        Amaranth's Verilog of the simulation top (module names ``top.core...``).
    top : str
        The top module's name.

    Returns
    -------
    (list of Probe, list of SramPort)
        Sorted by path and name, so the same design gives the same probes.
    """
    probes, ports = [], []
    starts = [mt.start() for mt in _MODULE_RE.finditer(verilog)] + [len(verilog)]
    prefix = f"{top}.core"
    for a, b in zip(starts, starts[1:]):
        chunk = verilog[a:b]
        name = _plain(_MODULE_RE.match(chunk).group(1))
        if name != prefix and not name.startswith(prefix + "."):
            continue
        path = name[len(prefix) + 1:]
        widths = {_plain(m.group(2)): int(m.group(1) or 0) + 1 for m in _REG_RE.finditer(chunk)}
        group = _group(path)
        for mt in _FLOP_RE.finditer(chunk):
            flop = _plain(mt.group(1))
            if flop.startswith("$") or (path, flop) in _SKIP_FLOPS:
                continue
            probes.append(Probe(group, path, flop, widths[flop]))
        mems = {_plain(m.group(2)): (int(m.group(1)) + 1, int(m.group(3)) + 1) for m in _MEM_RE.finditer(chunk)}
        for kind, rx in (("write", _WPORT_RE), ("read", _RPORT_RE)):
            for mt in rx.finditer(chunk):
                mem = _plain(mt.group(2))
                if mem in mems:
                    width, depth = mems[mem]
                    memory = f"{path}.{mem}" if path else mem
                    ports.append(SramPort(memory, kind, path, _plain(mt.group(1)), width, depth))
    probes.sort(key=lambda p: (p.path, p.name))
    ports.sort(key=lambda p: (p.memory, p.kind, p.enable))
    return probes, ports


def _ref(path: str, name: str) -> str:
    # Escaped identifiers throughout: a plain name may be a Verilog keyword (``buf``).
    parts = (path.split(".") if path else []) + [name]
    return "simtop.core." + ".".join(f"\\{p} " for p in parts)


def probe_verilog(probes: list[Probe], ports: list[SramPort]) -> str:
    """Verilog statements (inside the test bench module) that count the activity.

    Each group's flops are concatenated into one vector; ``$countones`` of its XOR with the
    previous sample is added while the core is busy (RECIPES.md sec. 7: the cheapest exact
    counting under cocotb).
    """
    lines = ["  // ---- activity probes (npuforge.cosim.toggles), simulation only ----",
             "  reg [63:0] npf_cycles = 0;", "  reg npf_fin_q = 0;", "  integer npf_fd;",
             f"  initial npf_fd = $fopen(\"{ACTIVITY_FILE}\", \"w\");",
             "  wire npf_busy = simtop.core.busy;"]
    clear, count, fields = [], [], ['"cycles": %0d']
    args = ["npf_cycles"]

    def vector(name, members):
        width = sum(p.width for p in members)
        cat = ", ".join(_ref(p.path, p.name) for p in members)
        lines.append(f"  wire [{width - 1}:0] {name}_x = {{{cat}}};")
        lines.append(f"  reg [{width - 1}:0] {name}_q = 0;")
        lines.append(f"  reg [63:0] {name} = 0;")
        count.append(f"    {name}_q <= {name}_x;")
        count.append(f"    if (npf_busy) {name} <= {name} + 64'($countones({name}_x ^ {name}_q));")
        clear.append(f"      {name} <= 0;")

    mac = [p for p in probes if p.is_mac_operand]
    if mac:
        vector("npf_mac", mac)
    for g in GROUPS:
        # The MAC operands are array registers: counted once, added to the array's total.
        members = [p for p in probes if p.group == g and not p.is_mac_operand]
        extra = " + npf_mac" if g == "array" and mac else ""
        if members:
            vector(f"npf_t_{g}", members)
        if members or extra:
            fields.append(f'"toggles.{g}": %0d')
            args.append((f"npf_t_{g}" if members else "64'd0") + extra)
    if mac:
        fields.append('"mac_operand_toggles": %0d')
        args.append("npf_mac")
    for i, port in enumerate(ports):
        lines.append(f"  reg [63:0] npf_s{i} = 0;")
        count.append(f"    if (npf_busy && {_ref(port.path, port.enable)}) npf_s{i} <= npf_s{i} + 1;")
        clear.append(f"      npf_s{i} <= 0;")
        fields.append(f'"sram.{i}": %0d')
        args.append(f"npf_s{i}")
    fmt = "{" + ", ".join(fields).replace('"', '\\"') + "}\\n"
    lines += [
        "  always @(posedge clk) begin",
        "    npf_fin_q <= simtop.finished;",
        "    if (simtop.finished && !npf_fin_q) begin",
        f"      $fwrite(npf_fd, \"{fmt}\", {', '.join(args)});",
        "      $fflush(npf_fd);",
        "    end",
        "    if (npf_busy) npf_cycles <= npf_cycles + 1;",
        *count,
        "    if (load_q) begin",
        "      npf_cycles <= 0;",
        *clear,
        "    end",
        "  end",
    ]
    return "\n".join(lines) + "\n"


def parse_activity_line(raw: dict, ports: list[SramPort], probes: list[Probe] = ()) -> dict:
    """Turn one line of :data:`ACTIVITY_FILE` into the activity dict of a run.

    Returns
    -------
    dict
        ``cycles``, ``toggles`` ({group: n}), ``bits`` ({group: register bits watched}),
        ``mac_operand_toggles``, ``sram`` ({memory: {"reads", "writes", "width", "depth"}}).
    """
    act = {"cycles": int(raw["cycles"]), "toggles": {g: 0 for g in GROUPS},
           "bits": {g: sum(p.width for p in probes if p.group == g) for g in GROUPS},
           "mac_operand_toggles": int(raw.get("mac_operand_toggles", 0)), "sram": {}}
    for g in GROUPS:
        act["toggles"][g] = int(raw.get(f"toggles.{g}", 0))
    for i, port in enumerate(ports):
        m = act["sram"].setdefault(port.memory, {"reads": 0, "writes": 0, "width": port.width, "depth": port.depth})
        m["reads" if port.kind == "read" else "writes"] += int(raw[f"sram.{i}"])
    return act
