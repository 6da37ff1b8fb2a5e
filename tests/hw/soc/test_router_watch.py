"""The place-and-route watch: router2's stall is read from the nextpnr log, and the run is stopped."""

import signal
import subprocess
import sys
import time

import pytest

from npuforge.hw.soc.report import render_markdown
from npuforge.hw.soc.router_watch import HEATMAP, RouterStall, congestion_by_block, router2_stall, run_watched

# Overused wires per router2 iteration of a real run that did not converge: the ulx3s-8x8 SoC at 25 MHz
# (requantiser window), nextpnr 0.11.1, seed 1. Fewest at iteration 24, then rising.
# The same SoC without that change (main's hardware), seed 1: it hovers near its fewest (52 at iteration 83) for
# 20 iterations; not a stall.
HOVERING = [64512, 43660, 30583, 21502, 16167, 12308, 8542, 6719, 5438, 4341, 3532, 3021, 2701, 2386, 2064, 1651,
            1290, 1237, 1062, 935, 816, 717, 640, 491, 438, 379, 374, 355, 348, 340, 368, 335, 367, 351, 324, 299, 265,
            214, 217, 193, 173, 158, 158, 155, 181, 203, 170, 160, 138, 120, 117, 111, 108, 105, 106, 113, 121, 103,
            102, 96, 89, 77, 76, 69, 68, 70, 71, 76, 73, 64, 70, 87, 70, 91, 96, 91, 94, 84, 79, 76, 73, 65, 52, 72,
            84, 91, 112, 107, 92, 105, 83, 74, 83, 86, 99, 98, 96, 107, 90, 94, 85, 79, 75, 84]
STALLED = [62837, 42377, 29041, 19802, 14574, 10826, 8754, 7588, 6543, 5664, 5015, 4410, 3980, 3638, 3222, 2925,
           2687, 2402, 2467, 2334, 2304, 2106, 2119, 2023, 2133, 2142, 2155, 2314, 2591, 2734, 2666, 2925, 2961,
           3250, 3338]


def _log(counts, first=1):
    lines = ["Info: Routing globals...", "Info: Running main router loop..."]
    lines += [f"Info:     iter={i} wires={700000 + i} overused={c} overuse={c + 9} archfail=NA"
              for i, c in enumerate(counts, first)]
    return "\n".join(lines) + "\n"


def test_stall_is_patience_iterations_past_the_fewest_overused_wires_and_well_above_them():
    log = _log(STALLED)
    assert router2_stall(log, 12) is None                       # 11 iterations since iteration 24
    stall = router2_stall(log, 11)
    assert stall == RouterStall(iteration=35, overused=3338, best_iteration=24, best_overused=2023, patience=11)
    assert str(stall).startswith("nextpnr's router2 stopped converging: 3338 overused wires at iteration 35, "
                                 "none fewer than 2023 (iteration 24) in the 11 iterations since")
    assert router2_stall(log + _log([2022], first=36), 11) is None      # a new lowest count resets it
    assert router2_stall(_log(STALLED[:31]), 7) is None                 # 2,666 at iteration 31: not yet 3,034


def test_no_stall_while_hovering_near_the_fewest():
    assert router2_stall(_log(HOVERING), 20) is None
    assert router2_stall(_log(HOVERING + [151]), 20) is None                # 99 above 52: fewer than 100 more
    assert router2_stall(_log(HOVERING + [152]), 20) == RouterStall(105, 152, 83, 52, 20)
    assert router2_stall(_log(HOVERING[:83] + [152] * 20), 20) == RouterStall(103, 152, 83, 52, 20)


def test_no_stall_while_converging_or_before_routing():
    assert router2_stall(_log([900 - 30 * i for i in range(30)]), 5) is None
    assert router2_stall("Info: Placed 120 cells based on constraints.\n", 1) is None
    assert router2_stall(_log([500, 750, 750, 750]), 3) == RouterStall(4, 750, 1, 500, 3)


@pytest.fixture
def fast_poll(monkeypatch):
    import npuforge.hw.soc.router_watch as watch
    monkeypatch.setattr(watch, "POLL_S", 0.1)


def _script(tmp_path, body):
    path = tmp_path / "build.sh"
    path.write_text("set -e\n" + body)
    return ["sh", str(path)]


# router2's congestion heatmap by net (``--router2-heatmap``): net name, overused wires (real names, trimmed).
BY_NET = ("$PACKER_GND_NET,4\nsoc.core.datapath.acc.mem.bank1_copy2.0.0_DOA0[3],103\n"
          "soc.core.datapath.acc.mem.bank0_copy0.0.0_DOA0[2],60\nsoc.link.clear_overrun_LUT4_D_Z[2],117\n"
          "soc.core.datapath.compute_engine.slot_d15.accumulate_LUT4_A_Z,28\nlocked_LUT4_D_Z[1],3\n")


def test_congestion_is_summed_by_block():
    assert congestion_by_block(BY_NET) == (("soc.core.datapath.acc", 163), ("soc.link", 117),
                                           ("soc.core.datapath.compute_engine", 28), ("top", 7))
    assert congestion_by_block(BY_NET, count=1, levels=2) == (("soc.core", 191),)
    assert congestion_by_block("") == ()


def test_run_watched_stops_a_stalled_router_and_its_children(tmp_path, fast_poll):
    # A script that logs router2 lines and heatmaps as nextpnr does and would go on for a minute: stopped at
    # the stall, which names the most congested blocks; the heatmaps are removed.
    log = tmp_path / "top.tim"
    lines = "".join(f"printf '{BY_NET}' > {tmp_path}/{HEATMAP}_congestion_by_net_{i}.csv\n"
                    f"echo 'Info:     iter={i} wires=1 overused={c} overuse={c}' >> {log}; sleep 0.05\n"
                    for i, c in enumerate([4000, 3000, 2000, 2500, 2600, 2700, 2800, 3100], 1))
    cmd = _script(tmp_path, f"sleep 60 & echo $! > {tmp_path}/child\n" + lines + "wait\n")
    t0 = time.monotonic()
    stall = run_watched(cmd, tmp_path, {"PATH": "/usr/bin:/bin"}, log, patience=5)
    assert time.monotonic() - t0 < 20
    assert stall == RouterStall(iteration=8, overused=3100, best_iteration=3, best_overused=2000, patience=5,
                                congested=congestion_by_block(BY_NET))
    assert "; most overused wires in soc.core.datapath.acc (163), soc.link (117)" in str(stall)
    assert not list(tmp_path.glob(HEATMAP + "*"))
    child = int((tmp_path / "child").read_text())
    time.sleep(0.5)
    assert not _running(child), "the script's child was left running"


def test_a_terminated_flow_stops_the_command_it_runs(tmp_path):
    # nextpnr runs in a session of its own: a SIGTERM to the flow (a CI timeout, `kill`) has to stop it too.
    cmd = _script(tmp_path, f"sleep 60 & echo $! > {tmp_path}/child\nwait\n")
    flow = subprocess.Popen([sys.executable, "-c", "import sys; from pathlib import Path; "
                             "from npuforge.hw.soc.router_watch import run_watched; "
                             f"run_watched({cmd!r}, Path({str(tmp_path)!r}), {{'PATH': '/usr/bin:/bin'}}, "
                             f"Path({str(tmp_path / 'top.tim')!r}), 20)"])
    deadline = time.monotonic() + 60       # generous: a loaded machine imports Amaranth slowly
    while not (tmp_path / "child").is_file() or not (tmp_path / "child").read_text().strip():
        assert time.monotonic() < deadline and flow.poll() is None
        time.sleep(0.1)
    flow.terminate()
    assert flow.wait(timeout=30) == 128 + signal.SIGTERM
    child = int((tmp_path / "child").read_text())
    deadline = time.monotonic() + 10       # the signal is sent; give the child time to act on it
    while _running(child) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _running(child), "the command's child outlived the flow"


def _running(pid):
    # Gone, or a zombie not yet reaped by its new parent: not running.
    try:
        state = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_run_watched_returns_or_raises_as_the_command_ends(tmp_path, fast_poll):
    log = tmp_path / "top.tim"
    ok = _script(tmp_path, f"echo 'Info:     iter=1 wires=1 overused=0 overuse=0' > {log}\n")
    assert run_watched(ok, tmp_path, {"PATH": "/usr/bin:/bin"}, log, patience=1) is None
    with pytest.raises(subprocess.CalledProcessError):
        run_watched(_script(tmp_path, "exit 3\n"), tmp_path, {"PATH": "/usr/bin:/bin"}, log, 1)


def test_report_of_a_stopped_route_says_so():
    report = {"board": "ulx3s", "device": "d", "config": "c", "config_hash": "0" * 16, "clock_requested_mhz": 25.0,
              "baud": 1, "dram_bytes": 1, "fits": True, "timing_met": None, "fmax_mhz": None, "resources": {},
              "memories": [], "problems": [str(RouterStall(35, 3338, 24, 2023, 11))], "bitstream": None,
              "stopped_at": "routing"}
    md = render_markdown(report)
    assert "Fits; **not routed** (place and route stopped):" in md
    assert "- nextpnr's router2 stopped converging: 3338 overused wires at iteration 35" in md
    assert "- bitstream: none (not built)" in md


# A build script as amaranth writes it, calling a stand-in for nextpnr that stalls with seed 1 (and would run a
# minute more) and routes with any other seed.
FAKE_PNR = """seed=$2; i=0
if [ "$seed" = 1 ]; then
  for c in 900 500 600 700 800; do
    i=$((i + 1)); echo "Info:     iter=$i wires=1 overused=$c overuse=$c" >> top.tim
  done
  sleep 60
fi
echo "Info:     iter=1 wires=1 overused=0 overuse=0" > top.tim
echo "seed $seed" > top.bit
"""


@pytest.mark.parametrize("tries", [1, 2])
def test_place_and_route_tries_the_next_seed_after_a_stall(tmp_path, fast_poll, tries):
    from npuforge.hw.soc.build import _place_and_route
    (tmp_path / "fake_pnr.sh").write_text(FAKE_PNR)
    (tmp_path / "build_top.sh").write_text("set -e\nsh fake_pnr.sh --seed 1 --log top.tim\n")
    said = []
    seed, stalls = _place_and_route(tmp_path, {"PATH": "/usr/bin:/bin"}, tmp_path / "top.tim", 1, tries, 3,
                                    said.append)
    assert stalls == {1: RouterStall(iteration=5, overused=800, best_iteration=2, best_overused=500, patience=3)}
    if tries == 1:
        assert seed == 1 and not (tmp_path / "top.bit").exists() and said == []
    else:
        assert seed == 2 and (tmp_path / "top.bit").read_text() == "seed 2\n"
        assert "--seed 2 " in (tmp_path / "build_top.sh").read_text()
        assert "overused=800" in (tmp_path / "top.seed1.tim").read_text()      # the stalled run's log, kept
        assert "overused=0" in (tmp_path / "top.tim").read_text()
        assert said == ["router2 stopped converging with seed 1; placing and routing again with seed 2"]


def test_report_names_the_seeds_that_stalled_before_the_one_that_routed():
    report = {"board": "ulx3s", "device": "d", "config": "c", "config_hash": "0" * 16, "clock_requested_mhz": 25.0,
              "baud": 1, "dram_bytes": 1, "fits": True, "timing_met": True, "fmax_mhz": 27.5, "resources": {},
              "memories": [], "problems": [], "bitstream": "top.bit", "seed": 3,
              "router_stalls": {"1": {}, "2": {}}}
    assert "- nextpnr seed 3: router2 stopped converging with seed 1, 2 (`router_stalls` in report.json)" in \
        render_markdown(report)
