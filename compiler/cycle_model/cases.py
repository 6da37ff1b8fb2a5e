"""Kernel cases for checking the cycle model against the RTL: every kernel at several shapes.

The shapes cover full and edge tiles, both matmul buffering schemes (double-buffered with
streamed activations, and single-buffered), the requantised store path, and conv2d with
stride, padding and ReLU, so that every token pattern the kernel library emits is timed.
"""

from __future__ import annotations

from ..kernels import KERNELS
from ..kernels.gemm import Quant
from ..kernels.matmul import MatmulTiling, default_tiling

__all__ = ["kernel_cases", "build_case", "case_config"]


def case_config(name: str):
    """The design points the model is checked on: a preset (``4x4``, ``8x8``, ``16x16``), or one with
    a suffix of FPGA settings: ``-v2`` (``4x4-v2``) sets ``vector_stages: 2``, whose bubbles depend on
    rows, ``-d2`` sets ``dispatch_stages: 2``, ``-v2d2`` both (the 4x4 board point's settings)."""
    from ...config import load_config
    preset, _, suffix = name.partition("-")
    settings = {"": {}, "v2": {"vector_stages": 2}, "d2": {"dispatch_stages": 2},
                "v2d2": {"vector_stages": 2, "dispatch_stages": 2}}
    if suffix not in settings:
        raise ValueError(f"{name!r}: the suffix after the preset is one of "
                         f"{', '.join(repr(k) for k in settings if k)}, not {suffix!r}")
    config = load_config(preset)
    return config.replace(name=name, **settings[suffix]) if suffix else config


def kernel_cases(config, quick: bool = False) -> list[tuple[str, str, dict, dict]]:
    """(name, kernel, shape, options) for ``config``; ``quick`` keeps one small case per kernel.

    Options are the keyword arguments of the kernel's ``build`` (``tiling``, ``quant``).
    """
    cases = [
        ("matmul-32", "matmul", {"m": 32, "k": 32, "n": 32}, {}),
        ("conv2d-8x8", "conv2d", {"h": 8, "w": 8, "cin": 8, "cout": 8, "kh": 3, "kw": 3, "stride": 1, "pad": 1}, {}),
        ("relu-24x40", "relu", {"m": 24, "n": 40}, {}),
        ("add-24x40", "add", {"m": 24, "n": 40}, {}),
        ("maxpool-8x8", "maxpool", {"h": 8, "w": 8, "cin": 8, "kh": 2, "kw": 2, "stride": 2}, {}),
    ]
    if quick:
        return cases
    edge = {"m": 33, "k": 17, "n": 9 + config.cols}
    single = default_tiling({"m": 48, "k": 40, "n": 24}, config)
    cases += [
        ("matmul-64", "matmul", {"m": 64, "k": 64, "n": 64}, {}),
        ("matmul-edge", "matmul", edge, {}),
        ("matmul-quant", "matmul", {"m": 40, "k": 24, "n": 32}, {"quant": Quant(multiplier=1 << 14, shift=20, zp=3)}),
        ("matmul-single-buffer", "matmul", {"m": 48, "k": 40, "n": 24},
         {"tiling": MatmulTiling(single.tile_m, single.tile_n, double_buffer=False, stream_a=False)}),
        ("matmul-no-stream", "matmul", {"m": 48, "k": 40, "n": 24},
         {"tiling": MatmulTiling(single.tile_m, single.tile_n, double_buffer=True, stream_a=False)}),
        ("matmul-128x64x96", "matmul", {"m": 128, "k": 64, "n": 96}, {}),
        ("conv2d-default", "conv2d", dict(KERNELS["conv2d"].params), {}),
        ("conv2d-stride2-relu", "conv2d", {"h": 13, "w": 11, "cin": 5, "cout": 12, "kh": 3, "kw": 3, "stride": 2,
                                           "pad": 1}, {"relu": True}),
        ("conv2d-1x1", "conv2d", {"h": 9, "w": 7, "cin": 24, "cout": 20, "kh": 1, "kw": 1, "stride": 1, "pad": 0}, {}),
        ("relu-64", "relu", {"m": 64, "n": 64}, {}),
        ("relu-odd", "relu", {"m": 7, "n": 131}, {}),
        ("add-64", "add", {"m": 64, "n": 64}, {}),
        ("add-odd", "add", {"m": 5, "n": 77}, {}),
        ("maxpool-default", "maxpool", dict(KERNELS["maxpool"].params), {}),
        ("maxpool-3x3s1", "maxpool", {"h": 9, "w": 10, "cin": 12, "kh": 3, "kw": 3, "stride": 1}, {}),
    ]
    return cases


def build_case(config, kernel: str, shape: dict, options: dict, seed: int = 0):
    """The kernel's :class:`~npuforge.compiler.kernels.registry.BundleContents` for one case."""
    return KERNELS[kernel].build(config, dict(shape), seed, **options)


def pack_words(words) -> str:
    """Instruction words as compact text (zlib + base64 of the little-endian bytes), for records."""
    import base64
    import zlib
    blob = b"".join(int(w).to_bytes(16, "little") for w in words)
    return base64.b64encode(zlib.compress(blob, 9)).decode()


def unpack_words(text: str) -> tuple[int, ...]:
    """The inverse of :func:`pack_words`."""
    import base64
    import zlib
    blob = zlib.decompress(base64.b64decode(text))
    return tuple(int.from_bytes(blob[i:i + 16], "little") for i in range(0, len(blob), 16))


def record_rtl_golden(path, presets=("4x4", "8x8", "16x16"), count: int = 30, seed: int = 61_000) -> dict:
    """Run random programs and the quick kernel cases on the RTL and write what it measured as JSON.

    Each run keeps its program (:func:`pack_words`; timing never depends on data, so no DRAM
    image is needed), so the record stays valid whatever the generators do later. The tests
    compare the cycle model with it when no Verilator is at hand; regenerate it
    (``python -m npuforge.compiler.cycle_model.cases PATH``) when the RTL's timing changes on
    purpose (the RTL differential test says when).

    Returns
    -------
    dict
        ``{preset: {"config_hash", "runs": [{"label", "words", "cycles", "error", "error_pc",
        "counters"}]}}``.
    """
    import json
    from pathlib import Path

    from ...config import load_config
    from ...cosim.randprog import random_programs
    from ...cosim.runner import run_rtl

    out = {}
    for preset in presets:
        cfg = load_config(preset)
        jobs, labels = [], []
        # Half of them illegal, so that every illegal case (deadlocks included) is recorded.
        for p in random_programs(cfg, count, seed=seed, illegal_fraction=0.5):
            jobs.append((p.words, p.dram))
            labels.append(f"seed {p.seed} ({p.kind})")
        for name, kind, shape, opts in kernel_cases(cfg, quick=True):
            c = build_case(cfg, kind, shape, opts)
            jobs.append((c.builder.image().words, c.dram))
            labels.append(name)
        runs = []
        for label, (words, _), r in zip(labels, jobs, run_rtl(jobs, cfg, quiet=True)):
            runs.append({"label": label, "words": pack_words(words), "cycles": r.cycles, "error": r.error.name,
                         "error_pc": r.error_pc if r.error.name != "NONE" else 0, "counters": r.counters})
        out[preset] = {"config_hash": cfg.hash, "runs": runs}
    # One run per line: small, and a diff shows which runs changed.
    lines = ["{"]
    for i, (preset, rec) in enumerate(out.items()):
        lines.append(f' "{preset}": {{"config_hash": "{rec["config_hash"]}", "runs": [')
        lines += ["  " + json.dumps(r, sort_keys=True, separators=(",", ":")) + ("," if j < len(rec["runs"]) - 1 else "")
                  for j, r in enumerate(rec["runs"])]
        lines.append(" ]}" + ("," if i < len(out) - 1 else ""))
    lines.append("}")
    Path(path).write_text("\n".join(lines) + "\n")
    return out


if __name__ == "__main__":
    import sys
    record_rtl_golden(sys.argv[1])
