"""The typed hardware configuration: the one source of truth for every size.

A :class:`HwConfig` is loaded from YAML, validated field by field (an error names
the file, the line and the field and says what is allowed), frozen, and hashed
stably. The RTL, the reference simulator, the kernels, the cycle model and the
exploration studies all read the same object; derived values (row sizes, row
counts, address widths) are computed here and nowhere else.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field, fields
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

__all__ = ["HwConfig", "ConfigError", "load_config", "render_config_doc", "PRESETS", "DEFAULT_CONFIG"]

PRESETS = ("4x4", "8x8", "16x16")
DEFAULT_CONFIG = "8x8"


class ConfigError(ValueError):
    """A configuration value is missing, unknown or out of range.

    The message reads ``FILE:LINE: FIELD: what is allowed, got VALUE``.
    """


def _pow2(lo: int, hi: int):
    def check(v):
        if not (isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi and v & (v - 1) == 0):
            return f"must be a power of two in {lo}..{hi}"
    return check


def _int_range(lo: int, hi: int):
    def check(v):
        if not (isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi):
            return f"must be an integer in {lo}..{hi}"
    return check


def _choice(*allowed):
    def check(v):
        if v not in allowed:
            return "must be one of " + ", ".join(repr(a) for a in allowed)
    return check


def _positive_number(v):
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not (0 < v <= 10_000):
        return "must be a number of MHz in (0, 10000]"


def _name(v):
    if not (isinstance(v, str) and v and all(c.isalnum() or c in "-_." for c in v)):
        return "must be a non-empty name of letters, digits, '-', '_' or '.'"


def _f(check, doc, default=dataclasses.MISSING, *, added=False):
    """A field; ``added`` marks one introduced after the first release: at its default it is left
    out of :attr:`HwConfig.hash`, so every earlier config keeps its hash (and its builds, images
    and recorded runs stay valid)."""
    return field(default=default, metadata={"check": check, "doc": doc, "added": added})


@dataclass(frozen=True)
class HwConfig:
    """One NPU design point. Immutable; compare and hash with :attr:`hash`."""

    name: str = _f(_name, "a label for reports", "custom")
    rows: int = _f(_pow2(2, 64), "systolic array rows: the K extent of a weight tile", 8)
    cols: int = _f(_pow2(2, 64), "systolic array columns: the N extent of a weight tile", 8)
    dataflow: str = _f(_choice("weight_stationary", "output_stationary"),
                       "array dataflow", "weight_stationary")
    input_bits: int = _f(_choice(8), "activation and weight width (int8)", 8)
    acc_bits: int = _f(_choice(32), "accumulator width (int32)", 32)
    spad_kib: int = _f(_pow2(1, 4096), "scratchpad size in KiB", 256)
    spad_banks: int = _f(_pow2(1, 16), "scratchpad banks, row-interleaved", 4)
    acc_kib: int = _f(_pow2(1, 4096), "accumulator memory size in KiB", 64)
    dram_mib: int = _f(_pow2(1, 256), "DRAM size in MiB", 16)
    dram_bytes_per_cycle: int = _f(_pow2(1, 64), "DRAM bandwidth: bytes per cycle (one beat)", 16)
    dram_latency: int = _f(_int_range(1, 1024), "DRAM read latency in cycles", 32)
    queue_depth: int = _f(_int_range(1, 256), "depth of each load / compute / store instruction queue", 16)
    token_depth: int = _f(_int_range(1, 255), "capacity of each dependency-token channel", 8)
    imem_words: int = _f(_pow2(16, 65536), "instruction memory size in 128-bit words", 4096)
    clock_mhz: float = _f(_positive_number, "clock frequency used for power figures", 200)
    vector_stages: int = _f(_int_range(1, 2), "pipeline stages of the vector unit: 1 computes every op, "
                            "the requantiser included, in one cycle; 2 registers the requantiser's product "
                            "(each compute command's done one cycle later, and a one-cycle bubble before a slot that "
                            "reads the row the VQUANT slot just before it writes): for FPGA clock rates",
                            1, added=True)
    dispatch_stages: int = _f(_int_range(1, 2), "stages of a queue instruction's dispatch: 1 resolves its addresses, "
                              "checks them and writes its queue in one cycle in decode; 2 registers the resolved "
                              "addresses in its first cycle, and checks them and writes its queue from its second (one "
                              "cycle more per queue instruction, an ADDR_RANGE error one cycle later): for FPGA clock "
                              "rates", 1, added=True)

    def __post_init__(self):
        for f in fields(self):
            problem = f.metadata["check"](getattr(self, f.name))
            if problem:
                raise ConfigError(f"{f.name}: {problem}, got {getattr(self, f.name)!r}")
        # Cross-field limits: the ISA's address fields are 16 bits wide (isa.fields).
        for what, count in (("spad_kib", self.spad_rows), ("acc_kib", self.acc_rows)):
            if count > 1 << 16:
                raise ConfigError(f"{what}: gives {count} rows, more than the ISA's 65536-row address space, "
                                  f"got {getattr(self, what)!r}")
            if count < self.spad_banks and what == "spad_kib":
                raise ConfigError(f"spad_kib: gives {count} rows, fewer than spad_banks={self.spad_banks}, "
                                  f"got {self.spad_kib!r}")
        for what, count in (("spad_kib", self.spad_rows), ("acc_kib", self.acc_rows)):
            if count < max(self.rows, self.cols):
                raise ConfigError(f"{what}: gives {count} rows, fewer than one {self.rows}x{self.cols} tile needs, "
                                  f"got {getattr(self, what)!r}")

    # ---- derived values (computed here only) ----------------------------------------
    @property
    def pes(self) -> int:
        """Number of processing elements."""
        return self.rows * self.cols

    @property
    def spad_row_bytes(self) -> int:
        """Bytes in one scratchpad row: an activation row (rows wide) or a weight row (cols wide)."""
        return max(self.rows, self.cols) * self.input_bits // 8

    @property
    def spad_rows(self) -> int:
        return self.spad_kib * 1024 // self.spad_row_bytes

    @property
    def acc_row_bytes(self) -> int:
        """Bytes in one accumulator row: cols int32 elements."""
        return self.cols * self.acc_bits // 8

    @property
    def acc_rows(self) -> int:
        return self.acc_kib * 1024 // self.acc_row_bytes

    @property
    def dram_bytes(self) -> int:
        return self.dram_mib << 20

    @property
    def spad_addr_bits(self) -> int:
        return (self.spad_rows - 1).bit_length()

    @property
    def acc_addr_bits(self) -> int:
        return (self.acc_rows - 1).bit_length()

    @property
    def dram_addr_bits(self) -> int:
        return (self.dram_bytes - 1).bit_length()

    @property
    def imem_addr_bits(self) -> int:
        return (self.imem_words - 1).bit_length()

    def derived(self) -> dict[str, int]:
        """The derived values, for ``npuforge config show`` and reports."""
        names = ("pes", "spad_row_bytes", "spad_rows", "acc_row_bytes", "acc_rows", "dram_bytes",
                 "spad_addr_bits", "acc_addr_bits", "dram_addr_bits", "imem_addr_bits")
        return {n: getattr(self, n) for n in names}

    # ---- identity ------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @cached_property
    def hash(self) -> str:
        """Stable 16-hex-digit hash of every field (the name included), keying builds and caches.

        A field added after the first release counts only when it differs from its default."""
        identity = {f.name: getattr(self, f.name) for f in fields(self)
                    if not (f.metadata["added"] and getattr(self, f.name) == f.default)}
        canon = json.dumps(identity, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canon.encode()).hexdigest()[:16]

    def replace(self, **changes) -> "HwConfig":
        """A copy with some fields changed (validated like a loaded config)."""
        return dataclasses.replace(self, **changes)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def render_config_doc() -> str:
    """docs/config.md: every field with its meaning, allowed values and default, and the derived values."""
    lines = ["<!-- Generated by `npuforge isa-doc` from npuforge/config.py; do not edit by hand. -->", "",
             "# Hardware configuration", "",
             "A design point is a flat YAML mapping of these fields (unknown keys are errors). "
             "Presets: " + ", ".join(f"`configs/{p}.yaml`" for p in PRESETS) + f" (default {DEFAULT_CONFIG}).",
             "", "| field | meaning | allowed | default |", "|---|---|---|---|"]
    probes = {"rows": 12, "dataflow": "?", "input_bits": 0, "acc_bits": 0, "name": "", "clock_mhz": 0}
    for f in fields(HwConfig):
        problem = f.metadata["check"](probes.get(f.name, -1))
        allowed = problem.replace("must be ", "") if problem else ""
        lines.append(f"| `{f.name}` | {f.metadata['doc']} | {allowed} | `{f.default}` |")
    lines += ["", "Derived values (computed in `HwConfig`, nowhere else):", ""]
    for name in HwConfig().derived():
        doc = (getattr(HwConfig, name).__doc__ or "").strip().split("\n")[0]
        lines.append(f"- `{name}`" + (f": {doc}" if doc else ""))
    added = ", ".join(f"`{f.name}`" for f in fields(HwConfig) if f.metadata["added"])
    lines += ["", "`HwConfig.hash` is the first 16 hex digits of the SHA-256 of the canonical JSON of every "
              f"field (those added after the first release, {added}, only when not at their default, so "
              "earlier configs keep their hashes); it keys RTL builds and caches, and program images carry it.",
              ""]
    return "\n".join(lines)


def _preset_path(name: str) -> Path | None:
    res = resources.files("npuforge.configs").joinpath(f"{name}.yaml")
    return Path(str(res)) if res.is_file() else None


def load_config(source: str | Path | None = None) -> HwConfig:
    """Load and validate a config from a YAML file or a preset name (``4x4``, ``8x8``, ``16x16``).

    Parameters
    ----------
    source
        Path to a YAML file, a preset name, or ``None`` for the default preset (8x8).

    Returns
    -------
    HwConfig

    Raises
    ------
    ConfigError
        With ``FILE:LINE: FIELD: ...`` for a bad value, an unknown key or a YAML syntax error.
    FileNotFoundError
        When neither a file nor a preset of that name exists.
    """
    source = DEFAULT_CONFIG if source is None else source
    path = Path(source)
    if not path.is_file():
        preset = _preset_path(str(source))
        if preset is None:
            raise FileNotFoundError(f"{source}: no such config file, and not a preset ({', '.join(PRESETS)})")
        path = preset
    text = path.read_text()
    try:
        node = yaml.compose(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = mark.line + 1 if mark else 1
        raise ConfigError(f"{path}:{line}: YAML syntax error: {getattr(e, 'problem', e)}") from None
    if node is None or not isinstance(node, yaml.MappingNode):
        raise ConfigError(f"{path}:1: expected a mapping of config fields")
    known = {f.name: f for f in fields(HwConfig)}
    values: dict[str, Any] = {}
    lines: dict[str, int] = {}
    for key_node, value_node in node.value:
        key = key_node.value
        line = key_node.start_mark.line + 1
        if key not in known:
            raise ConfigError(f"{path}:{line}: {key}: unknown field; allowed fields: {', '.join(known)}")
        if key in values:
            raise ConfigError(f"{path}:{line}: {key}: given twice")
        value = yaml.safe_load(yaml.serialize(value_node))
        problem = known[key].metadata["check"](value)
        if problem:
            raise ConfigError(f"{path}:{line}: {key}: {problem}, got {value!r}")
        values[key] = value
        lines[key] = line
    try:
        return HwConfig(**values)
    except ConfigError as e:
        key = str(e).split(":", 1)[0]
        raise ConfigError(f"{path}:{lines.get(key, 1)}: {e}") from None
