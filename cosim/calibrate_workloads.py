"""Seeded workloads for the MAC-energy calibration, and the PE register features they produce.

A workload is a stream of activation rows and weight tiles for a ``rows`` x ``cols``
weight-stationary grid (:mod:`npuforge.cosim.gate_level`). :func:`grid_features` replays the
grid's registers exactly (hw/pe.py: ``a(t+1) = a_in(t)``, ``p(t+1) = p_in(t) + a_in(t) * w(t)``,
``w(t+1) = w_in(t) if w_load(t)``) and counts what the RTL activity probes count
(:mod:`npuforge.cosim.toggles`): operand, partial-sum and partial-product flips.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["WORKLOADS", "Stimulus", "make_stimulus", "grid_features", "FEATURES"]

FEATURES = ("mac_operand_toggles", "mac_psum_toggles", "mac_pp_toggles")


def _int8(x):
    return np.clip(np.rint(x), -128, 127).astype(np.int8)


def _uniform(rng, shape):
    return rng.integers(-128, 128, shape).astype(np.int8)


def _act(kind: str, rng, shape, tile_len: int):
    if kind == "zeros50":
        a = _uniform(rng, shape)
        a[rng.random(shape) < 0.5] = 0
        return a
    if kind in ("small_act", "small_both"):
        return rng.integers(-4, 5, shape).astype(np.int8)
    if kind == "relu":
        # A requantised ReLU output: half zeros, the rest a half-normal of moderate magnitude.
        return _int8(np.maximum(rng.normal(0, 40, shape), 0))
    if kind == "const_act":
        t, r = shape
        tiles = _uniform(rng, (-(-t // tile_len), r))
        return np.repeat(tiles, tile_len, axis=0)[:t]
    return _uniform(rng, shape)


def _weights(kind: str, rng, shape):
    if kind == "small_both":
        return rng.integers(-4, 5, shape).astype(np.int8)
    if kind == "relu":
        return _int8(rng.normal(0, 30, shape))
    if kind == "sparse_w":
        w = _uniform(rng, shape)
        w[rng.random(shape) < 0.75] = 0
        return w
    return _uniform(rng, shape)


# name -> one line; the generators above follow the names.
WORKLOADS = {
    "random": "uniform int8 activations and weights",
    "zeros50": "uniform int8 activations, half of them zero",
    "small_act": "activations in -4..4, uniform int8 weights",
    "small_both": "activations and weights in -4..4",
    "relu": "ReLU-like activations (half zero, half-normal sigma 40), normal weights (sigma 30)",
    "const_act": "each row's activation constant over a weight tile",
    "sparse_w": "uniform activations, 75% zero weights",
}


@dataclass
class Stimulus:
    """Grid inputs per cycle (see :meth:`npuforge.cosim.gate_level.GateLevelGrid.run`)."""
    act: np.ndarray         # (T, rows) int8
    weights: np.ndarray     # (T, cols) int8
    load_mask: np.ndarray   # (T,) uint64


def make_stimulus(kind: str, rows: int, cols: int, cycles: int, seed: int, tile_len: int = 128) -> Stimulus:
    """A seeded workload: activations stream every cycle; a new weight tile every ``tile_len`` cycles.

    The weight tile is written one row per cycle (row ``k`` in the tile's cycle ``k``) while
    the activations keep streaming, as the NPU streams a new tile behind the last row.

    Raises
    ------
    ValueError
        Unknown workload (the message lists them).
    """
    if kind not in WORKLOADS:
        raise ValueError(f"unknown calibration workload '{kind}'; workloads: {', '.join(WORKLOADS)}")
    rng = np.random.default_rng(seed)
    act = _act(kind, rng, (cycles, rows), tile_len)
    n_tiles = -(-cycles // tile_len)
    tiles = _weights(kind, rng, (n_tiles, rows, cols))
    weights = np.zeros((cycles, cols), np.int8)
    mask = np.zeros(cycles, np.uint64)
    row_bits = np.uint64((1 << cols) - 1)
    for i in range(n_tiles):
        for k in range(rows):
            t = i * tile_len + k
            if t < cycles:
                weights[t] = tiles[i, k]
                mask[t] = row_bits << np.uint64(k * cols)
    # Between writes the weight bus holds its last value (no toggles that load nothing).
    held = np.maximum.accumulate(np.where(mask != 0, np.arange(cycles), 0))
    weights = weights[held]
    return Stimulus(act, weights, mask)


def _toggles(states: np.ndarray, bits: int) -> int:
    # states: (T+1, ...) integer values; flips between consecutive states, all bits.
    u = states.astype(np.int64) & ((1 << bits) - 1)
    x = (u[1:] ^ u[:-1]).astype(np.uint64)
    return int(np.unpackbits(x.view(np.uint8)).sum())


def _pp_toggles(a: np.ndarray, w: np.ndarray) -> int:
    # pp_i = w[i] ? a : 0 (raw 8-bit pattern of a); flips of every pp bit between states.
    ab = np.unpackbits(a.astype(np.int8).view(np.uint8)[:, None], axis=1).astype(bool)
    wb = np.unpackbits(w.astype(np.int8).view(np.uint8)[:, None], axis=1).astype(bool)
    pp = wb[:, :, None] & ab[:, None, :]
    return int((pp[1:] != pp[:-1]).sum())


def grid_features(stim: Stimulus, rows: int, cols: int) -> dict:
    """Replay the grid's PE registers and count their activity.

    Returns
    -------
    dict
        ``a``, ``w``, ``p`` (register flips, all PEs), ``registers`` (their sum) and
        :data:`FEATURES` (``mac_operand_toggles = a + w``, ``mac_psum_toggles = p``,
        ``mac_pp_toggles``), as the RTL probes define them.
    """
    t = len(stim.act)
    # The grid registers its inputs once: PE inputs at edge t are the stimulus of cycle t-1.
    a_in0 = np.zeros((t, rows), np.int64)
    a_in0[1:] = stim.act[:-1]
    w_bus = np.zeros((t, cols), np.int64)
    w_bus[1:] = stim.weights[:-1]
    mask = np.zeros(t, np.uint64)
    mask[1:] = stim.load_mask[:-1]
    out = {"a": 0, "w": 0, "p": 0, "mac_pp_toggles": 0}
    p_prev = [np.zeros(t + 1, np.int64) for _ in range(cols)]     # states of the PE above
    for k in range(rows):
        for n in range(cols):
            a_in = np.zeros(t, np.int64)                 # a_in[t]: input at edge t
            if t > n:
                a_in[n:] = a_in0[:t - n, k]              # n register stages to the left
            a = np.concatenate([[0], a_in])              # states: a[t] before edge t
            load = ((mask >> np.uint64(k * cols + n)) & np.uint64(1)).astype(bool)
            idx = np.maximum.accumulate(np.where(load, np.arange(t), -1))
            w_after = np.where(idx >= 0, w_bus[np.maximum(idx, 0), n], 0)
            w = np.concatenate([[0], w_after])
            p_in = p_prev[n][:t] if k else np.zeros(t, np.int64)
            p_new = (p_in + a_in * w[:t] + 2**31) % 2**32 - 2**31
            p = np.concatenate([[0], p_new])
            p_prev[n] = p
            out["a"] += _toggles(a, 8)
            out["w"] += _toggles(w, 8)
            out["p"] += _toggles(p, 32)
            out["mac_pp_toggles"] += _pp_toggles(a, w)
    out["registers"] = out["a"] + out["w"] + out["p"]
    out["mac_operand_toggles"] = out["a"] + out["w"]
    out["mac_psum_toggles"] = out["p"]
    return out
