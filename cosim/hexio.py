"""Memory image files for the simulation's storage: whole images in well under a second.

Loading uses binary files for ``$fread`` (:func:`write_beats_bin`, :func:`write_words_bin`):
no hex parsing, and leading and trailing zero beats are left out. Dumps are ``$writememh``
hex (:func:`read_beats_hex`), one word per line, most significant digit first, so that
byte ``j`` of a beat (little-endian, as on the DRAM port) is bits ``[8j, 8j+8)`` of the
word. :func:`write_beats_hex` writes the same hex format sparsely (``@address`` lines), for
``$readmemh`` users.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["write_beats_hex", "read_beats_hex", "write_beats_bin", "write_words_bin"]

_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)


def _byte_image(image, beat_bytes: int) -> np.ndarray:
    """The image as flat uint8; a ValueError when it is not a whole number of beats."""
    image = np.ascontiguousarray(image, dtype=np.uint8).reshape(-1)
    if image.size % beat_bytes:
        raise ValueError(f"image of {image.size} bytes is not a whole number of {beat_bytes}-byte beats")
    return image


def _hex_lines(beats: np.ndarray) -> np.ndarray:
    """(n, B) uint8 little-endian beats -> (n, 2B+1) ASCII lines, most significant byte first."""
    rev = beats[:, ::-1]
    n, b = rev.shape
    out = np.empty((n, 2 * b + 1), dtype=np.uint8)
    out[:, 0:2 * b:2] = _HEX[rev >> 4]
    out[:, 1:2 * b:2] = _HEX[rev & 15]
    out[:, -1] = ord("\n")
    return out


def write_beats_hex(path: str | Path, image: np.ndarray, beat_bytes: int) -> int:
    """Write a byte image as beats of ``beat_bytes``, skipping all-zero beats.

    Parameters
    ----------
    path : file to write
    image : uint8 array; its length must be a multiple of ``beat_bytes``
    beat_bytes : bytes per word

    Returns
    -------
    int
        Number of beats written.
    """
    image = _byte_image(image, beat_bytes)
    beats = image.reshape(-1, beat_bytes)
    if beat_bytes % 8 == 0:
        # Find non-zero 8-byte words first: much faster than a per-byte any() on big, sparse images.
        words = np.flatnonzero(image.view(np.uint64))
        nz = np.unique(words // (beat_bytes // 8))
    else:
        nz = np.flatnonzero(beats.any(axis=1))
    lines = _hex_lines(beats[nz])
    chunks = []
    if nz.size:
        starts = np.flatnonzero(np.diff(nz) != 1) + 1
        bounds = np.concatenate(([0], starts, [nz.size]))
        for a, b in zip(bounds[:-1], bounds[1:]):
            chunks.append(b"@%x\n" % int(nz[a]))
            chunks.append(lines[a:b].tobytes())
    Path(path).write_bytes(b"".join(chunks))
    return int(nz.size)


def read_beats_hex(path: str | Path, beat_bytes: int, start: int = 0) -> tuple[int, np.ndarray]:
    """Read a ``$writememh`` dump: ``(first address, (n, beat_bytes) uint8 little-endian beats)``.

    The dump must hold one contiguous range: an optional leading ``@address`` line (else the
    range starts at ``start``; Verilator's ranged ``$writememh`` writes none), then one word
    per line.
    """
    text = Path(path).read_bytes()
    lines = text.split()
    if lines and lines[0].startswith(b"@"):
        start = int(lines[0][1:], 16)
        lines = lines[1:]
    if any(line.startswith(b"@") for line in lines):
        raise ValueError(f"{path}: more than one address range")
    digits = 2 * beat_bytes
    if len(text) == (digits + 1) * len(lines):
        joined = text.replace(b"\n", b"")         # every word written at full width: no padding
    else:
        joined = b"".join(line.rjust(digits, b"0") for line in lines)
    if len(joined) != digits * len(lines):
        raise ValueError(f"{path}: a word is wider than {beat_bytes} bytes")
    beats = np.frombuffer(bytes.fromhex(joined.decode()), dtype=np.uint8).reshape(-1, beat_bytes)[:, ::-1]
    return start, np.ascontiguousarray(beats)


def write_beats_bin(path: str | Path, image: np.ndarray, beat_bytes: int) -> int:
    """Write a byte image for ``$fread`` into a memory of ``beat_bytes``-byte words.

    The file is the 8-byte big-endian index of the first beat and the 8-byte number of
    beats, then the beats from the first to the last non-zero one (the memory is zeroed
    before a load), each byte-reversed because ``$fread`` fills a word most significant
    byte first.

    Returns
    -------
    int
        Number of beats written.
    """
    image = _byte_image(image, beat_bytes)
    # Scanning 8-byte words is several times faster than bytes on large, sparse images.
    unit = 8 if image.size % 8 == 0 else 1
    nz = np.flatnonzero(image.view(np.uint64) if unit == 8 else image)
    lo = int(nz[0]) * unit // beat_bytes if nz.size else 0
    hi = (int(nz[-1]) * unit + unit - 1) // beat_bytes + 1 if nz.size else 0
    body = image[lo * beat_bytes:hi * beat_bytes].reshape(-1, beat_bytes)[:, ::-1].tobytes()
    Path(path).write_bytes(lo.to_bytes(8, "big") + (hi - lo).to_bytes(8, "big") + body)
    return hi - lo


def write_words_bin(path: str | Path, words, word_bytes: int = 16) -> None:
    """Write integer words (e.g. 128-bit instructions) for ``$fread``, from address 0."""
    body = b"".join(int(w).to_bytes(word_bytes, "big") for w in words)
    Path(path).write_bytes(bytes(8) + len(words).to_bytes(8, "big") + body)
