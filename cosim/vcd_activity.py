"""Recount a run's activity from a VCD waveform, independently of the HDL counters.

A small streaming VCD reader (Verilator's output: one ``#time`` per step, scalar and
``b...`` vector changes) samples every watched signal just before each rising clock edge
and applies the definition of :mod:`npuforge.cosim.toggles`. It serves the cross-check
that the probes count exactly; it is far too slow for bulk runs.
"""

from __future__ import annotations

from .toggles import GROUPS, Probe, SramPort, pe_operand_pairs

__all__ = ["activity_from_vcd"]

_TB = "npuforge_tb"


def _read_header(f):
    """Map ``dotted.path`` -> VCD id code for every variable; stops after ``$enddefinitions``."""
    scope, ids = [], {}
    for line in f:
        tok = line.split()
        if not tok:
            continue
        if tok[0] == "$scope":
            scope.append(tok[2])
        elif tok[0] == "$upscope":
            scope.pop()
        elif tok[0] == "$var":
            # $var wire 8 # name [7:0] $end ; the name may itself hold no spaces.
            code, name = tok[3], tok[4]
            ids.setdefault(".".join(scope + [name.lstrip("\\")]), code)
        elif tok[0] == "$enddefinitions":
            return ids
    raise ValueError("VCD: no $enddefinitions")


def _find(ids: dict, suffix: str) -> str:
    hits = [(path, code) for path, code in ids.items()
            if f".{path}".endswith("." + suffix) and f".{path}".startswith(f".{_TB}.")]
    if not hits:
        raise KeyError(f"VCD: no signal '{suffix}' below {_TB}")
    # The shortest path is the test bench's own (a port may also appear inside the top).
    return min(hits, key=lambda pc: len(pc[0]))[1]


def activity_from_vcd(path, probes: list[Probe], ports: list[SramPort]) -> list[dict]:
    """Count, from a VCD, what the activity probes count; one record per finished job.

    Parameters
    ----------
    path : path
        VCD of a run of the probed simulation top (``run_rtl(..., waves=True, power=True)``).
    probes, ports : list
        From :func:`npuforge.cosim.power_build.load_probes`.

    Returns
    -------
    list of dict
        Per job: ``cycles``, ``toggles`` ({group: n}), ``mac_operand_toggles``,
        ``mac_psum_toggles``, ``mac_pp_toggles`` and ``sram_ports`` (one count per entry of
        ``ports``, in order).
    """
    with open(path) as f:
        ids = _read_header(f)
        core = f"{_TB}.simtop.core."
        code_of = {}
        for p in probes:
            code_of[("p", p.path, p.name)] = _find(ids, "simtop.core." + (f"{p.path}." if p.path else "") + p.name)
        for i, port in enumerate(ports):
            code_of[("s", i)] = _find(ids, "simtop.core." + (f"{port.path}." if port.path else "") + port.enable)
        clk, busy = _find(ids, f"{_TB}.clk"), _find(ids, core + "busy")
        fin, load_q = _find(ids, f"{_TB}.simtop.finished"), _find(ids, f"{_TB}.load_q")
        value: dict[str, int] = {}
        kind = {p: "mac" if p.is_mac_operand else "psum" if p.is_psum else None for p in probes}
        probe_codes = [(p.group, kind[p], code_of[("p", p.path, p.name)]) for p in probes]
        pair_codes = [(code_of[("p", a.path, a.name)], code_of[("p", w.path, w.name)], a.width, w.width)
                      for a, w in pe_operand_pairs(probes)]
        port_codes = [code_of[("s", i)] for i in range(len(ports))]
        prev = {c: 0 for _, _, c in probe_codes}
        prev_pp = [0] * len(pair_codes)
        zero = {"cycles": 0, "tog": dict.fromkeys(GROUPS, 0), "mac": 0, "psum": 0, "pp": 0}
        state = {**zero, "fin_q": 0, "sram": [0] * len(ports)}
        records = []

        def partial_products(a, w, aw, ww):
            # The definition, literally: pp_i = w[i] ? a : 0, each in its own aw-bit field.
            return sum((a if (w >> i) & 1 else 0) << (aw * i) for i in range(ww))

        def edge():
            v = value.get
            if v(fin, 0) and not state["fin_q"]:
                records.append({"cycles": state["cycles"], "toggles": dict(state["tog"]),
                                "mac_operand_toggles": state["mac"], "mac_psum_toggles": state["psum"],
                                "mac_pp_toggles": state["pp"], "sram_ports": list(state["sram"])})
            state["fin_q"] = v(fin, 0)
            pp_now = [partial_products(v(ca, 0), v(cw, 0), aw, ww) for ca, cw, aw, ww in pair_codes]
            if v(busy, 0):
                state["cycles"] += 1
                for group, k, c in probe_codes:
                    n = (v(c, 0) ^ prev[c]).bit_count()
                    state["tog"][group] += n
                    if k:
                        state[k] += n
                state["pp"] += sum((x ^ y).bit_count() for x, y in zip(pp_now, prev_pp))
                for i, c in enumerate(port_codes):
                    state["sram"][i] += 1 if v(c, 0) else 0
            for _, _, c in probe_codes:
                prev[c] = v(c, 0)
            prev_pp[:] = pp_now
            if v(load_q, 0):
                state.update(zero, tog=dict.fromkeys(GROUPS, 0), sram=[0] * len(ports))

        batch: list[tuple[str, int]] = []

        def flush():
            # Values just before this step are still in ``value``: a rising clock in the step
            # samples them, then the step's changes apply.
            for code, val in batch:
                if code == clk and val == 1 and value.get(clk, 0) == 0:
                    edge()
                    break
            for code, val in batch:
                value[code] = val
            batch.clear()

        for line in f:
            c0 = line[:1]
            if c0 == "#":
                flush()
            elif c0 == "b":
                bits, code = line[1:].split()
                batch.append((code, int(bits.replace("x", "0").replace("z", "0"), 2)))
            elif c0 in "01xz" and c0:
                batch.append((line[1:].strip(), 1 if c0 == "1" else 0))
        flush()
    return records
