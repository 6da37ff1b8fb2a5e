"""The fit check: memory plans from the config and Yosys cell counts against the device."""

from pathlib import Path

import pytest

from npuforge.config import load_config
from npuforge.hw.soc.boards import BOARDS, ecp5_pll_params, get_board
from npuforge.hw.soc.fit import fit_problems, memory_plan, plan_usage, usage_from_stat

REPO = Path(__file__).resolve().parents[3]


def test_ulx3s_8x8_memory_plan_fits_and_matches_yosys():
    cfg = load_config(REPO / "configs/ulx3s-8x8.yaml")
    plan = {m.name: m for m in memory_plan(cfg, "ecp5", 65536)}
    # 2W3R accumulator: 2 banks x 3 read copies of 128 rows x 256 bits, 8 DP16KD each.
    assert plan["accumulator"].copies == 6 and plan["accumulator"].blocks == 48
    assert plan["on-chip DRAM"].blocks == 32
    assert plan["instruction predecode"].blocks == 2       # 512 x 44 bits
    used = plan_usage(plan.values())
    assert used == {"BRAM": 90}            # Yosys mapped this design to 90 DP16KD as well
    assert fit_problems(used, BOARDS["ulx3s"].capacity) == []


def test_icebreaker_4x4_does_not_fit_and_says_why():
    cfg = load_config(REPO / "configs/icebreaker-4x4.yaml")
    board = BOARDS["icebreaker"]
    plan = {m.name: m for m in memory_plan(cfg, "ice40", board.dram_bytes)}
    # The 2W3R accumulator alone: 6 copies of 64 rows x 128 bits, 8 EBR each (EBR is 16 bits wide).
    assert plan["accumulator"].blocks == 48
    used = plan_usage(plan.values())
    assert fit_problems(used, board.capacity) == ["BRAM: needs 79, the device has 30"]
    link = plan_usage(memory_plan(cfg, "ice40", board.dram_bytes, with_core=False))
    assert link == {"BRAM": 16} and fit_problems(link, board.capacity) == []
    assert plan_usage(memory_plan(cfg, "ice40", 65536, spram=True, with_core=False)) == {"SPRAM": 2}


def test_usage_from_stat_maps_cells():
    stat = {"design": {"num_cells_by_type": {"SB_LUT4": 100, "SB_DFFE": 7, "SB_DFFSR": 3, "SB_RAM40_4K": 2,
                                             "SB_MAC16": 1, "SB_CARRY": 9}}}
    used, other = usage_from_stat(stat, BOARDS["icebreaker"].cells)
    assert used == {"LUT": 100, "FF": 10, "BRAM": 2, "DSP": 1}
    assert other == {"SB_CARRY": 9}
    ecp5 = {"modules": {"\\top": {"num_cells_by_type": {"LUT4": 10, "CCU2C": 4, "TRELLIS_FF": 5}}}}
    assert usage_from_stat(ecp5, BOARDS["ulx3s"].cells)[0] == {"LUT": 18, "FF": 5}
    assert fit_problems({"LUT": 6000, "FF": 10}, BOARDS["icebreaker"].capacity) == \
        ["LUT: needs 6000, the device has 5280"]


def test_pll_and_board_lookup():
    assert ecp5_pll_params(25e6, 50e6) == {"CLKI_DIV": 1, "CLKFB_DIV": 2, "CLKOP_DIV": 12, "CLKOP_CPHASE": 5}
    with pytest.raises(ValueError, match="cannot make 1000 MHz"):
        ecp5_pll_params(25e6, 1e9)
    with pytest.raises(ValueError, match="unknown board 'de10'; boards: icebreaker, ulx3s"):
        get_board("de10")
