"""Bundles: contents, round trip, program.s <-> program.bin, atomic writes and clear load errors."""

import json

import numpy as np
import pytest

from npuforge.compiler.bundle import BundleError, load_bundle, make_bundle
from npuforge.compiler.kernels import KernelError, MatmulTiling
from npuforge.config import load_config

CFG = load_config("8x8")


@pytest.fixture
def bundle(tmp_path):
    return make_bundle("matmul", dict(m=20, k=12, n=9), CFG, 3, tmp_path / "mm")


def test_bundle_has_every_part_and_round_trips(bundle):
    assert sorted(p.name for p in bundle.iterdir()) == sorted(
        ["program.s", "program.bin", "dram.bin", "manifest.json", "expected.npz"])
    b = load_bundle(bundle)
    m = b.manifest
    assert m["kernel"] == "matmul" and m["shape"] == dict(m=20, k=12, n=9) and m["seed"] == 3
    assert m["config"] == CFG.to_dict() and m["config_hash"] == CFG.hash == b.config.hash
    assert m["macs"] == 20 * 12 * 9
    assert set(m["tiling"]) == {"tile_m", "tile_n", "double_buffer", "stream_a"}
    assert m["tensors"]["A"] == {"addr": 0, "shape": [20, 12], "dtype": "int8", "role": "input"}
    assert m["tensors"]["C"]["role"] == "output" and m["tensors"]["C"]["dtype"] == "int32"
    # dram.bin ends with the last input byte (B), the output area is not in it
    t_b = m["tensors"]["B"]
    assert b.dram.size == t_b["addr"] + 12 * 9
    rng = np.random.default_rng(3)
    a = rng.integers(-128, 128, size=(20, 12), dtype=np.int8)
    assert np.array_equal(b.read_tensor(b.dram, "A"), a)
    want = a.astype(np.int64) @ b.read_tensor(b.dram, "B").astype(np.int64)
    assert np.array_equal(b.expected["C"], want)
    assert (bundle / "program.s").read_text().startswith("; npuforge bundle program: kernel matmul")


def test_same_inputs_give_the_same_bytes(tmp_path):
    paths = [make_bundle("conv2d", {}, CFG, 5, tmp_path / f"c{i}") for i in range(2)]
    for name in ("program.s", "program.bin", "dram.bin", "manifest.json"):
        assert (paths[0] / name).read_bytes() == (paths[1] / name).read_bytes(), name


@pytest.mark.parametrize("kind", ["matmul", "conv2d", "relu", "add", "maxpool"])
def test_program_s_assembles_to_program_bin(tmp_path, kind):
    asm = pytest.importorskip("npuforge.assembler.asm")
    path = make_bundle(kind, {}, CFG, 0, tmp_path / kind)
    assembled = asm.assemble((path / "program.s").read_text(), CFG, str(path / "program.s"))
    assert assembled.image.to_bytes() == (path / "program.bin").read_bytes()


def test_failed_build_leaves_nothing(tmp_path):
    out = tmp_path / "bad"
    with pytest.raises(KernelError, match="tile_n: must be a positive multiple of cols=8, got 12"):
        make_bundle("matmul", {}, CFG, 0, out, tiling=MatmulTiling(8, 12))
    assert list(tmp_path.iterdir()) == []


def test_interrupted_write_keeps_the_old_bundle(tmp_path, monkeypatch, bundle):
    import npuforge.compiler.bundle as mod
    before = (bundle / "program.bin").read_bytes()

    def boom(contents, folder):
        (folder / "program.s").write_text("partial")
        raise OSError("disk full")

    monkeypatch.setattr(mod, "_write_files", boom)
    with pytest.raises(OSError, match="disk full"):
        make_bundle("matmul", dict(m=5, k=5, n=5), CFG, 0, bundle)
    assert (bundle / "program.bin").read_bytes() == before
    assert sorted(p.name for p in bundle.parent.iterdir()) == ["mm"]


def test_rebuild_replaces_an_existing_bundle(tmp_path, bundle):
    make_bundle("relu", dict(m=3, n=3), CFG, 0, bundle)
    assert load_bundle(bundle).kernel == "relu"
    assert sorted(p.name for p in bundle.parent.iterdir()) == ["mm"]


def test_refuses_to_replace_a_folder_that_is_not_a_bundle(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(BundleError, match="exists and is not a bundle"):
        make_bundle("relu", {}, CFG, 0, tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_unknown_kernel_and_shape_parameter():
    with pytest.raises(KernelError, match="unknown kernel 'gemv'; kernels: add, conv2d, matmul, maxpool, relu"):
        make_bundle("gemv", {}, CFG, 0, "unused")
    with pytest.raises(KernelError, match=r"matmul: unknown shape parameter\(s\) h; it takes m, k, n"):
        make_bundle("matmul", dict(h=3), CFG, 0, "unused")
    with pytest.raises(KernelError, match="matmul: k must be an integer >= 1, got 0"):
        make_bundle("matmul", dict(k=0), CFG, 0, "unused")


@pytest.mark.parametrize("part", ["manifest.json", "program.bin", "dram.bin", "expected.npz"])
def test_missing_part_is_named(bundle, part):
    (bundle / part).unlink()
    with pytest.raises(BundleError, match=rf"{part}: missing"):
        load_bundle(bundle)


def test_malformed_parts_are_named(bundle):
    (bundle / "manifest.json").write_text("{ not json")
    with pytest.raises(BundleError, match=r"manifest.json: malformed JSON"):
        load_bundle(bundle)


def test_config_tampering_is_detected(bundle):
    m = json.loads((bundle / "manifest.json").read_text())
    m["config"]["rows"] = 16
    (bundle / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(BundleError, match=r"manifest.json: config_hash [0-9a-f]{16} does not match"):
        load_bundle(bundle)
    m["config"]["rows"] = 12
    (bundle / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(BundleError, match=r"manifest.json: config: rows: must be a power of two"):
        load_bundle(bundle)


def test_image_for_another_config_is_refused(tmp_path, bundle):
    other = make_bundle("matmul", dict(m=20, k=12, n=9), load_config("4x4"), 3, tmp_path / "other")
    (bundle / "program.bin").write_bytes((other / "program.bin").read_bytes())
    with pytest.raises(BundleError, match=r"program.bin: image was made for config hash"):
        load_bundle(bundle)


def test_expected_must_cover_every_output(bundle):
    np.savez(bundle / "expected.npz", D=np.zeros(3))
    with pytest.raises(BundleError, match="expected.npz: no array for output tensor 'C'"):
        load_bundle(bundle)
    np.savez(bundle / "expected.npz", C=np.zeros((20, 9), np.int8))
    with pytest.raises(BundleError, match=r"expected.npz: 'C' is int8 \[20, 9\], the manifest says int32 \[20, 9\]"):
        load_bundle(bundle)
