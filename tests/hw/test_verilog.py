"""Verilog generation: module name, the core's ports, determinism, and the CLI."""

import re

import pytest

from npuforge.config import load_config
from npuforge.hw.verilog import generate_verilog

# A small design point keeps the conversion at a few seconds.
SMALL = load_config("4x4").replace(imem_words=16, spad_kib=1, acc_kib=1, dram_mib=1, queue_depth=2)


def ports(text):
    return set(re.findall(r"^\s*(?:input|output)\s+(?:\[\d+:0\]\s+)?(\w+);", text, re.M))


def test_core_top_and_ports():
    text = generate_verilog(SMALL)
    assert re.search(r"^module npu_core\(", text, re.M)
    got = ports(text.split("endmodule")[0])
    for name in ("clk", "rst", "start", "busy", "done", "error", "error_pc", "imem_we", "imem_addr",
                 "imem_data", "counters", "dram__req_valid", "dram__req_ready", "dram__req_addr",
                 "dram__resp_valid", "dram__resp_rdata"):
        assert name in got, name
    assert generate_verilog(SMALL) == text, "same config, same Verilog"


def test_unknown_top():
    with pytest.raises(ValueError, match="top must be one of"):
        generate_verilog(SMALL, top="gpu")


def test_dispatcher_top():
    assert "module npu_dispatcher(" in generate_verilog(SMALL, top="dispatcher")
