"""Bundles: a folder that holds everything needed to run and check one kernel case.

::

    program.s      assembly (a header comment says how it was made); assembles to program.bin
    program.bin    the program image (isa/image.py), bound to the config's hash
    dram.bin       the initial DRAM image, trimmed after the last input byte
    manifest.json  format, kernel, shape, seed, tiling, config (every field) and config_hash,
                   tensors (name -> addr, shape, dtype, role), macs, quant
    expected.npz   the expected output tensors, from the numpy references

A bundle is written into a temporary sibling folder and renamed into place, so a
failed build never leaves a half-written bundle behind (an existing bundle stays
until the new one is complete).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..config import ConfigError, HwConfig
from ..isa.image import ImageError, ProgramImage
from .kernels.common import TensorInfo
from .kernels.registry import KERNELS, BundleContents, full_shape

__all__ = ["FORMAT_VERSION", "Bundle", "BundleError", "make_bundle", "write_bundle", "load_bundle"]

FORMAT_VERSION = 1
FILES = ("program.s", "program.bin", "dram.bin", "manifest.json", "expected.npz")
_MANIFEST_KEYS = ("format", "kernel", "shape", "seed", "tiling", "config", "config_hash", "tensors", "macs")


class BundleError(ValueError):
    """A bundle is missing a part, has a malformed one, or its parts disagree. Names the file."""


@dataclass
class Bundle:
    """A loaded bundle."""
    path: Path
    manifest: dict
    config: HwConfig
    image: ProgramImage
    dram: np.ndarray                        # initial DRAM image (uint8, trimmed)
    expected: dict[str, np.ndarray]

    @property
    def kernel(self) -> str:
        return self.manifest["kernel"]

    @property
    def tensors(self) -> dict[str, TensorInfo]:
        return {name: TensorInfo(name, t["addr"], tuple(t["shape"]), t["dtype"], t["role"])
                for name, t in self.manifest["tensors"].items()}

    def read_tensor(self, dram: np.ndarray, name: str) -> np.ndarray:
        """Tensor ``name`` as it lies in a DRAM image (little-endian, row-major)."""
        t = self.tensors[name]
        raw = np.asarray(dram, np.uint8)[t.addr:t.addr + t.nbytes]
        if raw.size != t.nbytes:
            raise BundleError(f"{self.path}: DRAM image of {len(dram)} bytes ends inside tensor '{name}' "
                              f"(bytes {t.addr}..{t.addr + t.nbytes})")
        return raw.view(np.dtype(t.dtype).newbyteorder("<")).reshape(t.shape).astype(t.dtype)


def _command(kind: str, shape: dict, config, seed: int) -> str:
    opts = " ".join(f"--{k} {v}" for k, v in shape.items())
    return f"npuforge kernel {kind} {opts} -c {config.name} --seed {seed}"


def _manifest(c: BundleContents) -> dict:
    return {
        "format": FORMAT_VERSION,
        "kernel": c.kernel,
        "shape": c.shape,
        "seed": c.seed,
        "tiling": c.tiling,
        "config": c.config.to_dict(),
        "config_hash": c.config.hash,
        "tensors": {name: t.to_json() for name, t in c.tensors.items()},
        "macs": c.macs,
        "quant": c.quant,
        "program_words": len(c.builder),
        "command": _command(c.kernel, c.shape, c.config, c.seed),
    }


def _write_files(c: BundleContents, folder: Path) -> None:
    header = (f"npuforge bundle program: kernel {c.kernel} ({', '.join(f'{k}={v}' for k, v in c.shape.items())}), "
              f"seed {c.seed}\nconfig {c.config.name} (hash {c.config.hash}), tiling {json.dumps(c.tiling)}\n"
              f"made by: {_command(c.kernel, c.shape, c.config, c.seed)}")
    (folder / "program.s").write_text(c.builder.text(header))
    (folder / "program.bin").write_bytes(c.builder.image().to_bytes())
    (folder / "dram.bin").write_bytes(np.asarray(c.dram, np.uint8).tobytes())
    (folder / "manifest.json").write_text(json.dumps(_manifest(c), indent=2) + "\n")
    with open(folder / "expected.npz", "wb") as f:
        np.savez(f, **c.expected)


def write_bundle(contents: BundleContents, out_dir: str | os.PathLike) -> Path:
    """Write ``contents`` as a bundle at ``out_dir`` atomically (replacing an existing bundle).

    Raises
    ------
    BundleError
        When ``out_dir`` exists and is neither empty nor a bundle (nothing is replaced then).
    """
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / "manifest.json").is_file())):
        raise BundleError(f"{out}: exists and is not a bundle; refusing to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        _write_files(contents, tmp)
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
            old.rmdir()
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def make_bundle(kind: str, shape: dict, config, seed: int, out_dir: str | os.PathLike, **options) -> Path:
    """Build kernel ``kind`` for ``config`` with inputs from ``seed`` and write it as a bundle.

    Parameters
    ----------
    kind : str
        A key of :data:`~npuforge.compiler.kernels.KERNELS`.
    shape : dict
        Shape parameters; missing ones take the kernel's defaults, unknown ones are an error.
    config : HwConfig
    seed : int
        Seed of ``numpy.random.default_rng`` for the inputs.
    out_dir : path
    **options
        Passed to the kernel's build (``tiling=``, and ``quant=`` for matmul, ``relu=``/``zp=`` for conv2d).

    Returns
    -------
    Path : the bundle folder.

    Raises
    ------
    KernelError
        Unknown kernel or shape parameter, a shape or tiling that does not fit, a program too large.
    """
    shape = full_shape(kind, shape)
    contents = KERNELS[kind].build(config, shape, int(seed), **options)
    return write_bundle(contents, out_dir)


# ---- loading ----------------------------------------------------------------------------------

def _read(path: Path) -> bytes:
    if not path.is_file():
        raise BundleError(f"{path}: missing (is {path.parent} a bundle? it needs {', '.join(FILES)})")
    return path.read_bytes()


def load_bundle(bundle_dir: str | os.PathLike) -> Bundle:
    """Load and cross-check a bundle.

    Raises
    ------
    BundleError
        Naming the file: a missing or malformed part, a config that does not validate or does not
        match its hash, an image for another config, or expected outputs that do not match the manifest.
    """
    folder = Path(bundle_dir)
    if not folder.is_dir():
        raise BundleError(f"{folder}: no such bundle folder")
    mpath = folder / "manifest.json"
    try:
        manifest = json.loads(_read(mpath))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BundleError(f"{mpath}: malformed JSON: {e}") from None
    if not isinstance(manifest, dict):
        raise BundleError(f"{mpath}: expected a JSON object")
    missing = [k for k in _MANIFEST_KEYS if k not in manifest]
    if missing:
        raise BundleError(f"{mpath}: missing key(s) {', '.join(missing)}")
    if manifest["format"] != FORMAT_VERSION:
        raise BundleError(f"{mpath}: bundle format {manifest['format']!r}, this toolkit reads {FORMAT_VERSION}")
    try:
        config = HwConfig(**manifest["config"])
    except (ConfigError, TypeError) as e:
        raise BundleError(f"{mpath}: config: {e}") from None
    if config.hash != manifest["config_hash"]:
        raise BundleError(f"{mpath}: config_hash {manifest['config_hash']} does not match the config's "
                          f"fields (hash {config.hash})")
    ipath = folder / "program.bin"
    try:
        image = ProgramImage.from_bytes(_read(ipath), str(ipath))
        image.check_config(config, str(ipath))
    except ImageError as e:
        raise BundleError(str(e)) from None
    dpath = folder / "dram.bin"
    dram = np.frombuffer(_read(dpath), np.uint8).copy()
    if dram.size > config.dram_bytes:
        raise BundleError(f"{dpath}: {dram.size} bytes, more than dram_bytes={config.dram_bytes}")
    epath = folder / "expected.npz"
    _read(epath)
    try:
        with np.load(epath, allow_pickle=False) as npz:
            expected = {k: npz[k] for k in npz.files}
    except (ValueError, OSError) as e:
        raise BundleError(f"{epath}: not a readable .npz archive: {e}") from None
    bundle = Bundle(folder, manifest, config, image, dram, expected)
    try:
        tensors = bundle.tensors
    except (KeyError, TypeError, ValueError) as e:
        raise BundleError(f"{mpath}: malformed tensors entry: {e!r}") from None
    for name, t in tensors.items():
        if t.role != "output":
            continue
        if name not in expected:
            raise BundleError(f"{epath}: no array for output tensor '{name}'")
        if expected[name].shape != t.shape or expected[name].dtype != np.dtype(t.dtype):
            raise BundleError(f"{epath}: '{name}' is {expected[name].dtype} {list(expected[name].shape)}, "
                              f"the manifest says {t.dtype} {list(t.shape)}")
    return bundle
