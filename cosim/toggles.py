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
  activation and ``w`` weight registers; ``a_out``/``w_out`` in the output-stationary PE).
- ``mac_psum_toggles``: bit flips of every PE's partial-sum register (``p``; ``acc`` in the
  output-stationary PE). Both are part of ``toggles["array"]`` too.
- ``mac_pp_toggles``: bit flips of the multiplier's partial products, computed from the PE's
  registered operands: partial product ``i`` is ``w[i] ? a : 0`` (8 bits, the raw two's
  complement bits of ``a``; its shift does not change its flips), and the count adds
  ``popcount(pp_i[k] ^ pp_i[k-1])`` over ``i`` and every PE. Register toggles alone are a
  weak proxy for the multiplier's energy (RECIPES.md sec. 9: 20-30% off on ReLU-like and
  small-magnitude data); these flips are what drives the partial-product array, and
  ``npuforge power calibrate`` fits their energy against a gate-level netlist.
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
           "parse_activity_line", "pe_operand_pairs", "MAC_KEYS"]

ACTIVITY_FILE = "activity.jsonl"
# The MAC counts of an activity record (each PE's registers; see the module docstring).
MAC_KEYS = ("mac_operand_toggles", "mac_psum_toggles", "mac_pp_toggles")
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
# PE register names in the Verilog (hw/pe.py): weight-stationary ``a``/``w``/``p``; output-stationary
# ``a_out``/``w_out``/``acc`` (``a_r``/``w_r`` in Amaranth, renamed after the ports they drive).
_OPERAND_NAMES = ("a", "w", "a_out", "w_out", "a_r", "w_r")
_PSUM_NAMES = ("p", "acc")
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
    def in_pe(self) -> bool:
        return ".pe_" in f".{self.path}"

    @property
    def is_mac_operand(self) -> bool:
        return self.in_pe and self.name in _OPERAND_NAMES

    @property
    def is_psum(self) -> bool:
        return self.in_pe and self.name in _PSUM_NAMES


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


def pe_operand_pairs(probes: list[Probe]) -> list[tuple[Probe, Probe]]:
    """The ``(activation, weight)`` operand registers of every PE, in path order.

    Raises
    ------
    ValueError
        A PE with operands other than one activation and one weight register of equal width.
    """
    by_pe: dict[str, dict[str, Probe]] = {}
    for p in probes:
        if p.is_mac_operand:
            by_pe.setdefault(p.path, {})[p.name[0]] = p
    pairs = []
    for path in sorted(by_pe):
        ops = by_pe[path]
        if set(ops) != {"a", "w"} or ops["a"].width != ops["w"].width:
            raise ValueError(f"PE {path}: expected one activation and one weight register, got {sorted(ops)}")
        pairs.append((ops["a"], ops["w"]))
    return pairs


def _pp_expr(a: Probe, w: Probe) -> str:
    # {pp_{n-1}, ..., pp_0}; pp_i = w[i] ? a : 0, the partial products before their shifts.
    ra, rw = _ref(a.path, a.name), _ref(w.path, w.name)
    return ", ".join(f"({{{a.width}{{{rw}[{i}]}}}} & {ra})" for i in reversed(range(w.width)))


def probe_verilog(probes: list[Probe], ports: list[SramPort]) -> str:
    """Verilog statements (inside the test bench module) that count the activity.

    Each group's flops are concatenated into one vector; ``$countones`` of its XOR with the
    previous sample is added while the core is busy (RECIPES.md sec. 7: the cheapest exact
    counting under cocotb). The PE operands, the PE partial sums and the partial products
    are vectors of their own; the first two are added to the array's total.
    """
    lines = ["  // ---- activity probes (npuforge.cosim.toggles), simulation only ----",
             "  reg [63:0] npf_cycles = 0;", "  reg npf_fin_q = 0;", "  integer npf_fd;",
             f"  initial npf_fd = $fopen(\"{ACTIVITY_FILE}\", \"w\");",
             "  wire npf_busy = simtop.core.busy;"]
    clear, count, fields = [], [], ['"cycles": %0d']
    args = ["npf_cycles"]

    def vector(name, width, cat):
        lines.append(f"  wire [{width - 1}:0] {name}_x = {{{cat}}};")
        lines.append(f"  reg [{width - 1}:0] {name}_q = 0;")
        lines.append(f"  reg [63:0] {name} = 0;")
        count.append(f"    {name}_q <= {name}_x;")
        count.append(f"    if (npf_busy) {name} <= {name} + 64'($countones({name}_x ^ {name}_q));")
        clear.append(f"      {name} <= 0;")

    def regs(name, members):
        vector(name, sum(p.width for p in members), ", ".join(_ref(p.path, p.name) for p in members))

    mac = [p for p in probes if p.is_mac_operand]
    psum = [p for p in probes if p.is_psum]
    pairs = pe_operand_pairs(probes)
    if mac:
        regs("npf_mac", mac)
    if psum:
        regs("npf_psum", psum)
    if pairs:
        vector("npf_pp", sum(a.width * w.width for a, w in pairs), ", ".join(_pp_expr(a, w) for a, w in pairs))
    for g in GROUPS:
        # The MAC operands and partial sums are array registers: counted once, added to the array's total.
        members = [p for p in probes if p.group == g and not (p.is_mac_operand or p.is_psum)]
        extra = (" + npf_mac" if g == "array" and mac else "") + (" + npf_psum" if g == "array" and psum else "")
        if members:
            regs(f"npf_t_{g}", members)
        if members or extra:
            fields.append(f'"toggles.{g}": %0d')
            args.append((f"npf_t_{g}" if members else "64'd0") + extra)
    for key, name, present in (("mac_operand_toggles", "npf_mac", mac), ("mac_psum_toggles", "npf_psum", psum),
                               ("mac_pp_toggles", "npf_pp", pairs)):
        if present:
            fields.append(f'"{key}": %0d')
            args.append(name)
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
        the :data:`MAC_KEYS` (``mac_operand_toggles``, ``mac_psum_toggles``, ``mac_pp_toggles``),
        ``sram`` ({memory: {"reads", "writes", "width", "depth"}}).
    """
    act = {"cycles": int(raw["cycles"]), "toggles": {g: 0 for g in GROUPS},
           "bits": {g: sum(p.width for p in probes if p.group == g) for g in GROUPS}}
    act.update({k: int(raw.get(k, 0)) for k in MAC_KEYS})
    act["sram"] = {}
    for g in GROUPS:
        act["toggles"][g] = int(raw.get(f"toggles.{g}", 0))
    for i, port in enumerate(ports):
        m = act["sram"].setdefault(port.memory, {"reads": 0, "writes": 0, "width": port.width, "depth": port.depth})
        m["reads" if port.kind == "read" else "writes"] += int(raw[f"sram.{i}"])
    return act
