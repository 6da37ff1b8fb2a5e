"""Place and route under watch: stop nextpnr's router2 when it no longer converges.

router2 (negotiated congestion) reports one line per iteration in the nextpnr log,
``iter=N wires=W overused=O overuse=U ...``, and keeps iterating while any wire is overused,
with no limit of its own. On a congested netlist the overused count falls for a few dozen
iterations, reaches a lowest value in the thousands and then climbs again for hours
(docs/fpga.md); on a routable one it falls to tens of wires and may hover there for dozens of
fast iterations before it reaches zero. The flow therefore reads the log while nextpnr runs
and stops the run once ``patience`` iterations have passed since the lowest count and the
count has climbed well above it (by half of it, and by at least ``_RISE_MIN`` wires); the
build then fails with the counts, rather than not ending.

Where it is congested: the flow asks router2 for its congestion heatmaps (``--router2-heatmap``,
files ``HEATMAP_*_N.csv`` beside the log, one set per iteration), keeps only the newest while
the run goes on, and on a stall sums the last iteration's overused wires by block
(:func:`congestion_by_block`): the report then names the blocks where the router could not
find room, not only the counts.
"""

from __future__ import annotations

import csv
import io
import os
import re
import signal
import subprocess
import threading
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

from .report import _scope

__all__ = ["RouterStall", "router2_stall", "run_watched", "congestion_by_block", "HEATMAP"]

POLL_S = 10.0       # seconds between two reads of the log

_RISE_MIN = 100     # a climb of fewer wires than this above the lowest count is the endgame, not a stall

_ITER = re.compile(r"\biter=(\d+)\s+wires=\d+\s+overused=(\d+)")

HEATMAP = "top.heat"    # the prefix of router2's heatmaps, in the build folder (``--router2-heatmap``)
_HEAT_FILE = re.compile(re.escape(HEATMAP) + r"_(\w+?)_(\d+)\.csv$")


@dataclass(frozen=True)
class RouterStall:
    """router2 went ``patience`` iterations past its lowest overused count and climbed well above it."""
    iteration: int          # the last iteration logged
    overused: int           # its overused wires
    best_iteration: int     # the iteration with the fewest overused wires
    best_overused: int
    patience: int
    congested: tuple = ()   # ((block, overused wires of its nets), ...) at the last heatmap, most first

    def __str__(self) -> str:
        where = ("; most overused wires in " + ", ".join(f"{b} ({n})" for b, n in self.congested)
                 if self.congested else "")
        return (f"nextpnr's router2 stopped converging: {self.overused} overused wires at iteration "
                f"{self.iteration}, none fewer than {self.best_overused} (iteration {self.best_iteration}) in "
                f"the {self.iteration - self.best_iteration} iterations since (patience {self.patience}){where}; "
                f"the netlist is congested: try another --seed or --router router1, or a lower --clock-mhz")


def router2_stall(log_text: str, patience: int) -> RouterStall | None:
    """The stall in a nextpnr log, or None while router2 still converges (or has not started).

    A stall is ``patience`` iterations logged after the one with the fewest overused wires, the
    last of them with at least half as many again, and at least ``_RISE_MIN`` more.
    """
    best = last = None
    for m in _ITER.finditer(log_text):
        it, over = int(m.group(1)), int(m.group(2))
        if best is None or over < best[1]:
            best = (it, over)
        last = (it, over)
    if last is None or last[0] - best[0] < patience or last[1] < best[1] + max(best[1] // 2, _RISE_MIN):
        return None
    return RouterStall(last[0], last[1], best[0], best[1], patience)


def congestion_by_block(by_net_csv: str, count: int = 5, levels: int = 4) -> tuple:
    """((block, overused wires), ...): router2's ``congestion_by_net`` heatmap (``net,wires`` lines)
    summed by the module a net's name puts it in, at most ``levels`` deep; the ``count`` largest.

    Net names come from the synthesised cells that drive them (ABC names a cell after a net it
    drives), so a few wires show under a neighbouring module, as in ``widest_nets``; nets of the
    top module (the PLL's, the reset's, nextpnr's constant nets) count as ``top``.
    """
    blocks = Counter()
    for row in csv.reader(io.StringIO(by_net_csv)):
        if len(row) == 2 and row[1].strip().isdigit():
            blocks[_scope(row[0], levels)] += int(row[1])
    return tuple(blocks.most_common(count))


def _heatmaps(folder: Path) -> dict[int, list[Path]]:
    """The heatmap files in ``folder`` by router2 iteration."""
    out = {}
    for f in folder.glob(HEATMAP + "_*.csv"):
        m = _HEAT_FILE.search(f.name)
        if m:
            out.setdefault(int(m.group(2)), []).append(f)
    return out


def _keep_newest_heatmap(folder: Path) -> Path | None:
    """Delete every heatmap but the newest complete iteration's; that iteration's by-net file."""
    maps = _heatmaps(folder)
    done = sorted(maps)[:-1]            # the newest may still be being written
    for it in done[:-1]:
        for f in maps[it]:
            f.unlink(missing_ok=True)
    return next((f for f in maps[done[-1]] if "by_net" in f.name), None) if done else None


def run_watched(cmd: list[str], cwd: Path, env: dict, log: Path, patience: int | None) -> RouterStall | None:
    """Run ``cmd`` (the build script) and, every :data:`POLL_S` seconds, read the nextpnr ``log``.

    Returns None when the command ends by itself; a :class:`RouterStall` when the log shows
    one (``patience`` given), after the command and its children have been stopped. router2's
    heatmaps (:data:`HEATMAP`, beside the log) are pruned as it runs and removed at the end.

    Raises
    ------
    subprocess.CalledProcessError
        The command failed.
    """
    with _terminate_raises():
        try:
            return _watch(subprocess.Popen(cmd, cwd=cwd, env=env, start_new_session=True), cmd, log, patience)
        finally:
            for files in _heatmaps(log.parent).values():
                for f in files:
                    f.unlink(missing_ok=True)


def _watch(proc: subprocess.Popen, cmd: list[str], log: Path, patience: int | None) -> RouterStall | None:
    try:
        while True:
            try:
                rc = proc.wait(timeout=POLL_S)
            except subprocess.TimeoutExpired:
                newest = _keep_newest_heatmap(log.parent)
                stall = router2_stall(log.read_text(errors="replace"), patience) if (
                    patience and log.is_file()) else None
                if stall is not None:
                    _stop(proc)
                    if newest is not None and newest.is_file():
                        stall = replace(stall, congested=congestion_by_block(newest.read_text(errors="replace")))
                    return stall
                continue
            if rc != 0:
                raise subprocess.CalledProcessError(rc, cmd)
            return None
    except BaseException:
        _stop(proc)                 # an interrupt or an error here must not leave nextpnr running
        raise


@contextmanager
def _terminate_raises():
    """SIGTERM and SIGHUP raise SystemExit while the command runs (where no handler of the caller's is set).

    The command runs in a session of its own, out of reach of the signals that stop the flow; by
    default those signals would end Python without its cleanup and leave nextpnr running for hours.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    def exit_on(signum, frame):
        raise SystemExit(128 + signum)
    old = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGHUP)}
    for sig, handler in old.items():
        if handler == signal.SIG_DFL:
            signal.signal(sig, exit_on)
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
