"""Activity counting in the C++ harness: the counts of :mod:`npuforge.cosim.toggles`, computed in C++.

The HDL probes (a concatenation of every flop, a previous-value register, ``$countones``)
cost 2.8x on 16x16 under the plain harness; reading the flops themselves from C++, XOR with
the previous sample and ``__builtin_popcountll`` (``-mpopcnt``) is the cheapest exact
counting (RECIPES.md sec. 7). The definition is the one in the :mod:`~npuforge.cosim.toggles`
docstring, unchanged: before every clock edge ``k`` each watched register's value ``x[k]`` is
sampled; when ``busy[k]`` the counter adds ``popcount(x[k] ^ x[k-1])`` (an SRAM counter adds
``en[k]``); the previous sample is updated at every edge; counts clear on ``load`` and one
JSON line per job goes to :data:`~npuforge.cosim.toggles.ACTIVITY_FILE` with the keys the
HDL probes write. The partial-product flips of a PE (``pp_i = w[i] ? a : 0``) need no
partial products: summed over ``i`` they are
``popcount(w & w') * popcount(a ^ a') + popcount(w & ~w') * popcount(a) + popcount(~w & w') * popcount(a')``.

Only the test bench changes: a Verilator configuration file (``public_flat_rd``) keeps the
watched flops and enables as members of the model's root, whose generated header gives
their C++ names and types; :func:`counters_header` writes ``npf_counters.h`` for
``cosim/harness/main.cpp`` from it.
"""

from __future__ import annotations

import re

from .toggles import GROUPS, Probe, SramPort, pe_operand_pairs

__all__ = ["counting_vlt", "counters_header", "verilator_name"]

_TB_PATH = "npuforge_tb.simtop.core"
_MEMBER_RE = re.compile(r"^\s+(CData|SData|IData|QData|VlWide<(\d+)>)/\*(\d+):0\*/ (\w+);", re.M)


def verilator_name(name: str) -> str:
    """A Verilog identifier as Verilator's C++ names spell it (V3Ast ``encodeName``)."""
    out, i = [], 0
    while i < len(name):
        c = name[i]
        if (c.isascii() and c.isalpha()) or (i > 0 and c.isascii() and c.isdigit()):
            out.append(c)
        elif c == "_":
            if name[i + 1:i + 2] == "_":
                out.append("___05F")
                i += 1
            else:
                out.append("_")
        else:
            out.append(f"__0{ord(c):x}")
        i += 1
    return "".join(out)


def _member(path: str, name: str) -> str:
    parts = _TB_PATH.split(".") + (path.split(".") if path else []) + [name]
    return "__DOT__".join(verilator_name(p) for p in parts)


def counting_vlt(probes: list[Probe], ports: list[SramPort]) -> str:
    """A Verilator configuration file that keeps every watched signal readable from C++."""
    from .simtop import TOP_NAME
    lines = ["`verilator_config"]
    seen = set()
    targets = [(p.path, p.name) for p in probes] + [(p.path, p.enable) for p in ports] + [("", "busy")]
    for path, name in targets:
        if (path, name) in seen:
            continue
        seen.add((path, name))
        module = f"{TOP_NAME}.core" + (f".{path}" if path else "")
        lines.append(f'public_flat_rd -module "{module}" -var "{name}"')
    return "\n".join(lines) + "\n"


def _members(root_header: str) -> dict[str, tuple[str, int]]:
    """C++ member name -> (type, width) from ``Vtop___024root.h``."""
    return {m.group(4): (m.group(1), int(m.group(3)) + 1) for m in _MEMBER_RE.finditer(root_header)}


_SIZES = {"CData": 1, "SData": 2, "IData": 4, "QData": 8}


def counters_header(probes: list[Probe], ports: list[SramPort], root_header: str) -> str:
    """``npf_counters.h``: the ``NpfCounters`` struct that ``main.cpp`` samples before every edge.

    The code is table-driven, not one statement per register: a 16x16 design watches about
    1,600 registers, and straight-line code for them (130 KB) ran out of the instruction
    cache (3.2x the plain harness's time). Verilator lays the model's members out mostly
    contiguously, so at the first sample the watched members are merged into a few byte
    ranges of the model; each sample copies those ranges into a buffer (a few ``memcpy``),
    and each counter adds ``popcount((now ^ before) & mask)`` over the buffer words its
    registers occupy (the mask also drops bits above a register's width). The buffers swap.

    Raises
    ------
    RuntimeError
        A watched signal is not a member of the model's root, or a MAC operand is wider
        than 64 bits (the message names it).
    """
    members = _members(root_header)

    def member(path, name, width):
        cname = _member(path, name)
        if cname not in members:
            raise RuntimeError(f"the harness model has no member {cname} for {path}.{name} "
                               "(public_flat_rd did not keep it)")
        ctype, w = members[cname]
        if w != width:
            raise RuntimeError(f"{path}.{name}: {w} bits in the model, {width} in the probe list")
        return cname, _SIZES.get(ctype) or 4 * ((width + 31) // 32)

    # Segments: the groups, then the MAC operands and the partial sums (counted apart).
    nseg = len(GROUPS) + 2
    items, index = [], {}
    for p in probes:
        seg = len(GROUPS) if p.is_mac_operand else len(GROUPS) + 1 if p.is_psum else GROUPS.index(p.group)
        cname, size = member(p.path, p.name, p.width)
        index[(p.path, p.name)] = len(items)
        items.append((cname, size, seg, p.width))
    pes = []
    for a, w in pe_operand_pairs(probes):
        ia, iw = index[(a.path, a.name)], index[(w.path, w.name)]
        if items[ia][1] > 8 or items[iw][1] > 8:
            raise RuntimeError(f"{a.path}: MAC operands wider than 64 bits ({a.width}, {w.width})")
        pes.append((ia, iw, a.width, w.width))
    sram = [member(port.path, port.enable, 1)[0] for port in ports]
    busy = member("", "busy", 1)[0]

    init = [f"        it[{i}] = {{off(r, &r->{c}), {size}, {seg}, {width}, 0}};"
            for i, (c, size, seg, width) in enumerate(items)]
    init += [f"        sram_off[{i}] = off(r, &r->{c});" for i, c in enumerate(sram)]
    fields, args = ['\\"cycles\\": %llu'], ["(unsigned long long)cycles"]
    array = GROUPS.index("array")
    for gi, g in enumerate(GROUPS):
        fields.append(f'\\"toggles.{g}\\": %llu')
        args.append(f"(unsigned long long)(seg[{gi}]" + (f" + seg[{len(GROUPS)}] + seg[{len(GROUPS) + 1}])"
                                                          if gi == array else ")"))
    for key, var in (("mac_operand_toggles", f"seg[{len(GROUPS)}]"), ("mac_psum_toggles", f"seg[{len(GROUPS) + 1}]"),
                     ("mac_pp_toggles", "pp")):
        fields.append(f'\\"{key}\\": %llu')
        args.append(f"(unsigned long long){var}")
    for i in range(len(sram)):
        fields.append(f'\\"sram.{i}\\": %llu')
        args.append(f"(unsigned long long)sram[{i}]")
    fmt = "{" + ", ".join(fields) + "}\\n"
    pe_rows = ", ".join(f"{{{a}, {w}, {aw}, {ww}}}" for a, w, aw, ww in pes) or "{0, 0, 0, 0}"
    return "\n".join([
        "// Generated by npuforge.cosim.harness_counting for this build; do not edit.",
        "#pragma once",
        "#include <algorithm>",
        "#include <cstdint>",
        "#include <cstdio>",
        "#include <cstring>",
        "#include <vector>",
        "#include \"Vtop___024root.h\"",
        "struct NpfCounters {",
        "    struct Item { uint32_t off, size, seg, width, pos; };",
        "    struct Range { uint32_t off, len, pos; };",
        "    struct Word { uint32_t k; uint64_t mask; };",
        "    struct PeDef { uint32_t a, w, aw, ww; };",
        "    struct Pe { uint32_t a, w; uint64_t amask, wmask; };",
        f"    static constexpr int NSEG = {nseg}, NITEMS = {max(1, len(items))}, NSRAM = {len(sram)}, "
        f"NPES = {len(pes)};",
        f"    static constexpr PeDef PEDEFS[] = {{{pe_rows}}};",
        "    Item it[NITEMS] = {};",
        f"    uint32_t sram_off[{max(1, len(sram))}] = {{}};",
        "    uint32_t busy_off = 0;",
        "    std::vector<Range> ranges;",
        "    std::vector<Word> words[NSEG];",
        "    std::vector<Pe> pe;",
        "    std::vector<uint64_t> buf[2];",
        "    int cur = 0;",
        "    bool ready = false;",
        f"    uint64_t cycles = 0, seg[NSEG] = {{}}, pp = 0, sram[{max(1, len(sram))}] = {{}};",
        "    static uint32_t off(const Vtop___024root* r, const void* m) {",
        "        return (uint32_t)((const char*)m - (const char*)r);",
        "    }",
        "    static inline uint64_t ld(const std::vector<uint64_t>& b, uint32_t pos) {",
        "        uint64_t v;",
        "        std::memcpy(&v, (const char*)b.data() + pos, 8);",
        "        return v;",
        "    }",
        "    void init(Vtop___024root* r) {",
        *init,
        f"        busy_off = off(r, &r->{busy});",
        "        // Merge the members into ranges of the model (gaps under 64 bytes are copied too),",
        "        // each placed in the buffer at its own offset modulo 8.",
        "        std::vector<uint32_t> order(NITEMS);",
        "        for (uint32_t i = 0; i < (uint32_t)NITEMS; ++i) order[i] = i;",
        "        std::sort(order.begin(), order.end(), [&](uint32_t x, uint32_t y) { return it[x].off < it[y].off; });",
        "        uint32_t end = 0;",
        "        for (uint32_t i : order) {",
        "            Item& x = it[i];",
        "            if (ranges.empty() || x.off > ranges.back().off + ranges.back().len + 64) {",
        "                const uint32_t pos = ((end + 7) / 8) * 8 + x.off % 8;",
        "                ranges.push_back({x.off, 0, pos});",
        "            }",
        "            Range& g = ranges.back();",
        "            g.len = std::max(g.len, x.off + x.size - g.off);",
        "            x.pos = g.pos + (x.off - g.off);",
        "            end = g.pos + g.len;",
        "        }",
        "        const uint32_t nwords = (end + 7) / 8 + 2;   // slack: ld() reads 8 bytes",
        "        buf[0].assign(nwords, 0);",
        "        buf[1].assign(nwords, 0);",
        "        std::vector<uint64_t> mask[NSEG];",
        "        for (auto& m : mask) m.assign(nwords, 0);",
        "        for (const Item& x : it)",
        "            for (uint32_t b = 0; b < x.width; ++b) {",
        "                const uint32_t bit = x.pos * 8 + b;",
        "                mask[x.seg][bit / 64] |= 1ULL << (bit % 64);",
        "            }",
        "        for (int s = 0; s < NSEG; ++s)",
        "            for (uint32_t k = 0; k < nwords; ++k)",
        "                if (mask[s][k]) words[s].push_back({k, mask[s][k]});",
        "        for (int j = 0; j < NPES; ++j) {",
        "            const PeDef& d = PEDEFS[j];",
        "            pe.push_back({it[d.a].pos, it[d.w].pos, d.aw >= 64 ? ~0ULL : (1ULL << d.aw) - 1,",
        "                          d.ww >= 64 ? ~0ULL : (1ULL << d.ww) - 1});",
        "        }",
        "        ready = true;",
        "    }",
        "    // Before edge k: add the flips x[k] ^ x[k-1] when busy, always keep x[k].",
        "    inline void sample(Vtop___024root* r) {",
        "        if (!ready) init(r);",
        "        const char* base = (const char*)r;",
        "        std::vector<uint64_t>& now = buf[cur];",
        "        const std::vector<uint64_t>& before = buf[cur ^ 1];",
        "        char* dst = (char*)now.data();",
        "        for (const Range& g : ranges) std::memcpy(dst + g.pos, base + g.off, g.len);",
        "        cur ^= 1;",
        "        if (!(base[busy_off] & 1)) return;",
        "        ++cycles;",
        "        const uint64_t* n = now.data();",
        "        const uint64_t* b = before.data();",
        "        for (int s = 0; s < NSEG; ++s) {",
        "            uint64_t d = 0;",
        "            for (const Word& w : words[s]) d += __builtin_popcountll((n[w.k] ^ b[w.k]) & w.mask);",
        "            seg[s] += d;",
        "        }",
        "        // pp_i = w[i] ? a : 0: summed over i, the flips follow from a, w and their previous values.",
        "        uint64_t d = 0;",
        "        for (const Pe& e : pe) {",
        "            const uint64_t a = ld(now, e.a) & e.amask, a0 = ld(before, e.a) & e.amask;",
        "            const uint64_t w = ld(now, e.w) & e.wmask, w0 = ld(before, e.w) & e.wmask;",
        "            d += (uint64_t)__builtin_popcountll(w & w0) * __builtin_popcountll(a ^ a0)",
        "               + (uint64_t)__builtin_popcountll(w & ~w0) * __builtin_popcountll(a)",
        "               + (uint64_t)__builtin_popcountll(~w & w0 & e.wmask) * __builtin_popcountll(a0);",
        "        }",
        "        pp += d;",
        "        for (int i = 0; i < NSRAM; ++i) sram[i] += base[sram_off[i]] & 1;",
        "    }",
        "    void clear() {",
        "        cycles = pp = 0;",
        "        for (auto& x : seg) x = 0;",
        "        for (auto& x : sram) x = 0;",
        "    }",
        "    void write(std::FILE* f) const {",
        f"        std::fprintf(f, \"{fmt}\", {', '.join(args)});",
        "        std::fflush(f);",
        "    }",
        "};",
        "",
    ])
