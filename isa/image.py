"""Program images: the versioned binary form of a program, bound to one hardware config.

Layout (all fields little-endian)::

    offset  size  field
    0       4     magic b"NPUF"
    4       2     ISA version (spec.ISA_VERSION)
    6       2     header size in bytes (32)
    8       4     number of instruction words N
    12      4     flags (0; reserved)
    16      8     config hash (HwConfig.hash, 16 hex digits as 8 bytes)
    24      8     reserved (0)
    32      16*N  instruction words, 128 bits each, little-endian
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

from .spec import ISA_VERSION, WORD_BYTES

__all__ = ["ProgramImage", "ImageError", "MAGIC", "HEADER_BYTES"]

MAGIC = b"NPUF"
HEADER_BYTES = 32
_HEADER = struct.Struct("<4sHHII8s8s")
assert _HEADER.size == HEADER_BYTES


class ImageError(ValueError):
    """A program image is malformed, of another ISA version, or made for another config."""


@dataclass(frozen=True)
class ProgramImage:
    """Instruction words plus the hash of the config they were made for."""
    words: tuple[int, ...]
    config_hash: str

    def to_bytes(self) -> bytes:
        head = _HEADER.pack(MAGIC, ISA_VERSION, HEADER_BYTES, len(self.words), 0,
                            bytes.fromhex(self.config_hash), bytes(8))
        return head + b"".join(w.to_bytes(WORD_BYTES, "little") for w in self.words)

    @classmethod
    def from_bytes(cls, blob: bytes, source: str = "<image>") -> "ProgramImage":
        """Parse an image, checking magic, version, header size and length.

        Raises
        ------
        ImageError
            Naming ``source`` and what is wrong.
        """
        if len(blob) < HEADER_BYTES:
            raise ImageError(f"{source}: {len(blob)} bytes is too short for a program image header "
                             f"({HEADER_BYTES} bytes)")
        magic, version, hbytes, n, flags, chash, _ = _HEADER.unpack_from(blob)
        if magic != MAGIC:
            raise ImageError(f"{source}: not a program image (magic {magic!r}, expected {MAGIC!r})")
        if version != ISA_VERSION:
            raise ImageError(f"{source}: ISA version {version}, this toolkit implements version {ISA_VERSION}")
        if hbytes != HEADER_BYTES:
            raise ImageError(f"{source}: header size {hbytes}, expected {HEADER_BYTES}")
        if len(blob) != HEADER_BYTES + n * WORD_BYTES:
            raise ImageError(f"{source}: header says {n} words ({HEADER_BYTES + n * WORD_BYTES} bytes), "
                             f"file has {len(blob)} bytes")
        words = tuple(int.from_bytes(blob[HEADER_BYTES + i * WORD_BYTES:HEADER_BYTES + (i + 1) * WORD_BYTES],
                                     "little") for i in range(n))
        return cls(words, chash.hex())

    @classmethod
    def load(cls, path: str | Path) -> "ProgramImage":
        return cls.from_bytes(Path(path).read_bytes(), str(path))

    def check_config(self, config, source: str = "<image>") -> None:
        """Refuse an image made for another config, or one too large for its instruction memory."""
        if self.config_hash != config.hash:
            raise ImageError(f"{source}: image was made for config hash {self.config_hash}, "
                             f"but config '{config.name}' has hash {config.hash}; reassemble it for this config")
        if len(self.words) > config.imem_words:
            raise ImageError(f"{source}: {len(self.words)} instructions do not fit the instruction memory "
                             f"of {config.imem_words} words (imem_words)")
