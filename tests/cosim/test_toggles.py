"""Activity probes: which registers they watch, and that they count exactly (VCD cross-check)."""

import numpy as np
import pytest

from npuforge.config import load_config
from npuforge.cosim.randprog import small_matmul_program
from npuforge.cosim.toggles import GROUPS, find_probes, probe_verilog

_VERILOG = r"""
module top(clk);
endmodule
module \top.core (clk);
  reg busy = 1'h0;
  reg [671:0] counters = 0;
  always @(posedge clk)
    busy <= \$1 ;
  always @(posedge clk)
    counters <= \$2 ;
endmodule
module \top.core.datapath.compute_engine.array.pe_0_0 (clk);
  reg [7:0] a = 8'h00;
  reg [31:0] p = 32'd0;
  reg [7:0] w = 8'h00;
  reg [7:0] \$3 ;
  always @(posedge clk)
    a <= a_in;
  always @(posedge clk)
    p <= \$2 [31:0];
  always @(posedge clk)
    w <= \$3 ;
endmodule
module \top.core.datapath.spad (clk);
  reg [1:0] \buf  = 2'h0;
  reg [127:0] bank0 [8191:0];
  always @(posedge clk)
    \buf  <= x;
  always @(posedge clk) begin
    if (wp__en)
      bank0[wr__addr[14:2]] <= wp__data;
  end
  reg [127:0] _0_;
  always @(posedge clk) begin
    if (\rp__en$33 ) begin
      _0_ <= bank0[rd_store__addr[14:2]];
    end
  end
endmodule
"""


def test_find_probes_groups_registers_and_memory_ports():
    probes, ports = find_probes(_VERILOG, "top")
    got = {(p.group, p.path, p.name, p.width) for p in probes}
    assert got == {("control", "", "busy", 1), ("array", "datapath.compute_engine.array.pe_0_0", "a", 8),
                   ("array", "datapath.compute_engine.array.pe_0_0", "p", 32),
                   ("array", "datapath.compute_engine.array.pe_0_0", "w", 8), ("scratchpad", "datapath.spad", "buf", 2)}
    assert sorted(p.name for p in probes if p.is_mac_operand) == ["a", "w"]
    assert [p.name for p in probes if p.is_psum] == ["p"]
    assert [(s.memory, s.kind, s.enable, s.width, s.depth) for s in ports] == [
        ("datapath.spad.bank0", "read", "rp__en$33", 128, 8192), ("datapath.spad.bank0", "write", "wp__en", 128, 8192)]
    v = probe_verilog(probes, ports)
    # keywords and $-names are escaped in the hierarchical references
    assert r"simtop.core.\datapath .\spad .\buf " in v and r"\rp__en$33 " in v
    # scratchpad, control, MAC operands, partial sums, partial products (the PE holds all array registers)
    assert v.count("$countones") == 5
    assert "npf_t_array" not in v and "npf_mac" in v and "npf_t_dma" not in v
    # array total = the rest (none here) + operands + partial sums; 8 partial products of 8 bits per PE
    assert "64'd0 + npf_mac + npf_psum" in v
    assert "wire [63:0] npf_pp_x" in v
    pe = r"simtop.core.\datapath .\compute_engine .\array .\pe_0_0 "
    assert f"({{8{{{pe}.\\w [7]}}}} & {pe}.\\a )" in v


def test_groups_cover_the_real_design():
    from npuforge.cosim.build import simtop_verilog
    from npuforge.cosim.simtop import TOP_NAME
    cfg = load_config("4x4")
    text, _, _ = simtop_verilog(cfg)
    probes, ports = find_probes(text, TOP_NAME)
    bits = {g: sum(p.width for p in probes if p.group == g) for g in GROUPS}
    # every PE's activation, weight and partial-sum registers
    assert bits["array"] >= cfg.pes * (8 + 8 + 32)
    assert sum(p.width for p in probes if p.is_mac_operand) == cfg.pes * 16
    assert sum(p.width for p in probes if p.is_psum) == cfg.pes * 32
    from npuforge.cosim.toggles import pe_operand_pairs
    assert len(pe_operand_pairs(probes)) == cfg.pes
    for g in ("control", "dma", "vector", "array"):
        assert bits[g] > 0, g
    memories = {p.memory for p in ports}
    assert any(m.startswith("datapath.spad.") for m in memories)
    assert any(m.startswith("datapath.acc.") for m in memories)




@pytest.mark.rtl
def test_probe_counts_equal_a_recount_from_the_vcd(tmp_path):
    from npuforge.cosim.power_build import build_power_rtl, load_probes
    from npuforge.cosim.runner import run_rtl
    from npuforge.cosim.vcd_activity import activity_from_vcd
    cfg = load_config("4x4")
    rng = np.random.default_rng(5)
    dram = np.zeros(0x4000, np.uint8)
    dram[0x100:0x3000] = rng.integers(0, 256, 0x2F00, dtype=np.uint8)
    words = small_matmul_program(cfg)
    # two jobs: the counters must clear between them
    res = run_rtl([(words, dram), (words, dram)], cfg, waves=True, power=True, quiet=True,
                  wave_path=tmp_path / "run")
    probes, ports = load_probes(build_power_rtl(cfg, waves=True, quiet=True).directory)
    records = activity_from_vcd(res[0].extra["waves"], probes, ports)
    assert len(records) == 2
    for r, rec in zip(res, records):
        act = r.extra["activity"]
        assert act["cycles"] == rec["cycles"] == r.cycles
        assert act["toggles"] == rec["toggles"]
        assert act["mac_operand_toggles"] == rec["mac_operand_toggles"] > 0
        assert act["mac_psum_toggles"] == rec["mac_psum_toggles"] > 0
        assert act["mac_pp_toggles"] == rec["mac_pp_toggles"] > 0
        sram = {}
        for port, n in zip(ports, rec["sram_ports"]):
            m = sram.setdefault(port.memory, [0, 0])
            m[port.kind == "write"] += n
        assert {k: [v["reads"], v["writes"]] for k, v in act["sram"].items()} == sram
        assert act["toggles"]["array"] > 0 and act["toggles"]["dma"] > 0
        assert sram["datapath.spad.bank0"][1] > 0
    assert res[0].extra["activity"] == res[1].extra["activity"]
