"""The host link's memory map and command set: ONE declaration, read by the gateware and the host driver.

The SoC (:mod:`npuforge.hw.soc.link`) and the host driver (:mod:`npuforge.hw.soc.host`)
both import :class:`Cmd`, :class:`Status`, :class:`Space`, :data:`REGS` and
:class:`SocMap` from here; neither types a command code, an address or a field offset.

Frames (all integers little-endian)
-----------------------------------
Request (host -> SoC)::

    SYNC_REQ  cmd:u8  addr:u32  len:u16  payload[len if cmd carries one]  crc:u16

Reply (SoC -> host)::

    SYNC_RSP  status:u8  len:u16  data[len]  crc:u16

``crc`` is CRC-16/CCITT-FALSE (:func:`crc16`) over every byte after the sync byte.
Commands that carry a payload: ``WRITE`` (``len`` bytes to store at ``addr``) and
``START`` (:data:`START_PAYLOAD` bytes). ``READ`` returns ``len`` bytes from ``addr``.

Address spaces (the top byte of ``addr``, :class:`Space`)
---------------------------------------------------------
- ``DRAM``: the SoC's on-chip "DRAM", byte addressed, read/write, ``dram_bytes`` long.
- ``IMEM``: the instruction memory, byte addressed (word ``i`` at ``16 i``, little-endian),
  write only, whole words (``addr`` and ``len`` multiples of 16).
- ``REGS``: read-only registers, laid out by :data:`REGS` (identity, status, error, counters).

Load session (why a half-loaded program never runs)
---------------------------------------------------
``BEGIN`` zeroes the DRAM and the instruction memory (as the reference simulator starts
from zeros) and opens a session: the SoC counts the payload bytes of every ``WRITE``
it acknowledged with ``OK``. A ``WRITE`` that fails its checksum after its bytes were
stored, or a frame cut off by the inter-byte timeout, *taints* the session. ``START``
carries the config hash and the byte count the host sent; the SoC starts the NPU only
when the hash is its own, the count equals its own count and the session is not tainted
(else ``BAD_HASH`` / ``NOT_LOADED``), so a lost, corrupted or truncated frame can never
lead to a run of a partial program. A new ``BEGIN`` clears the taint.
"""

from __future__ import annotations

import binascii
import enum
from dataclasses import dataclass

__all__ = ["SYNC_REQ", "SYNC_RSP", "PROTOCOL_VERSION", "MAGIC", "Cmd", "Status", "Space", "RegField", "REGS",
           "REGS_BYTES", "STATUS_BITS", "FLAG_BITS", "START_PAYLOAD", "MAX_LEN", "SocMap", "crc16", "crc16_byte_step",
           "space_base", "decode_regs", "REQ_HEADER", "RSP_HEADER"]

SYNC_REQ = 0xA5
SYNC_RSP = 0x5A
PROTOCOL_VERSION = 1
MAGIC = int.from_bytes(b"NPUS", "little")   # the first REGS bytes read "NPUS" (NPU SoC)
MAX_LEN = 0xFFFF            # the len field is 16 bits
START_PAYLOAD = 12          # config hash (8 bytes) + byte count of the session (4 bytes)
REQ_HEADER = 1 + 4 + 2      # cmd, addr, len (after the sync byte)
RSP_HEADER = 1 + 2          # status, len


class Cmd(enum.IntEnum):
    """Request commands."""
    READ = 0x10     #: read ``len`` bytes at ``addr`` (DRAM or REGS)
    WRITE = 0x11    #: write the payload at ``addr`` (DRAM or IMEM); refused while the NPU runs
    BEGIN = 0x20    #: zero DRAM and IMEM, open a load session; refused while the NPU runs
    START = 0x21    #: start the NPU if hash and byte count match the session (payload: START_PAYLOAD)

    @property
    def has_payload(self) -> bool:
        return self in (Cmd.WRITE, Cmd.START)


class Status(enum.IntEnum):
    """Reply status codes."""
    OK = 0
    BAD_CHECKSUM = 1    #: the request's CRC did not match (a WRITE's bytes may be stored: session tainted)
    BAD_COMMAND = 2     #: unknown command, or a START whose len is not START_PAYLOAD
    BAD_ADDRESS = 3     #: outside the space, a write to a read-only space, or IMEM not in whole words
    BUSY = 4            #: WRITE, BEGIN or START while the NPU runs
    BAD_HASH = 5        #: START with another config's hash
    NOT_LOADED = 6      #: START whose byte count differs from the session's, or a tainted session


class Space(enum.IntEnum):
    """Address spaces: the value of ``addr >> 24``."""
    DRAM = 0x00
    IMEM = 0x01
    REGS = 0x02


def space_base(space: Space) -> int:
    """The first address of a space."""
    return int(space) << 24


@dataclass(frozen=True)
class RegField:
    """One field of the REGS space: ``size`` bytes at ``offset``, little-endian."""
    name: str
    offset: int
    size: int
    doc: str


def _layout():
    from ...hw.counters import COUNTER_NAMES
    fields = [("magic", 4, "MAGIC"), ("version", 2, "PROTOCOL_VERSION"),
              ("beat_bytes", 1, "config.dram_bytes_per_cycle"), ("flags", 1, "FLAG_BITS: no_core"),
              ("config_hash", 8, "HwConfig.hash as a 64-bit integer"),
              ("imem_words", 4, "instruction memory words"), ("dram_bytes", 4, "on-chip DRAM bytes"),
              ("clock_hz", 4, "the SoC clock"), ("baud", 4, "the UART's baud rate"),
              ("status", 1, "STATUS_BITS: busy, done, tainted, dram_overrun"),
              ("error", 1, "the core's ErrorCode"), ("error_pc", 2, "the instruction index of the error"),
              ("session_bytes", 4, "payload bytes acknowledged since BEGIN")]
    fields += [(f"counter_{n}", 8, f"counters.{n} (48 bits, zero-extended)") for n in COUNTER_NAMES]
    out, offset = {}, 0
    for name, size, doc in fields:
        out[name] = RegField(name, offset, size, doc)
        offset += size
    return out, offset


REGS, REGS_BYTES = _layout()
#: bit positions in the ``status`` register
STATUS_BITS = {"busy": 0, "done": 1, "tainted": 2, "dram_overrun": 3}
#: bit positions in the ``flags`` identity field: ``no_core`` marks the link-only bring-up SoC
FLAG_BITS = {"no_core": 0}


def crc16(data: bytes, crc: int = 0xFFFF) -> int:
    """CRC-16/CCITT-FALSE (polynomial 0x1021, initial 0xFFFF, no reflection) of ``data``.

    The gateware computes the same function one byte per cycle (:func:`crc16_byte_step`, the
    reference its test holds this to); here ``binascii.crc_hqx`` computes it in C.
    """
    return binascii.crc_hqx(bytes(data), crc)


def crc16_byte_step(crc: int, byte: int) -> int:
    """One byte of :func:`crc16`, written as the bit loop the gateware unrolls."""
    crc ^= byte << 8
    for _ in range(8):
        crc = ((crc << 1) ^ 0x1021) & 0xFFFF if crc & 0x8000 else (crc << 1) & 0xFFFF
    return crc


@dataclass(frozen=True)
class SocMap:
    """The address map of one SoC build: what the host may address and what the registers hold.

    Parameters
    ----------
    imem_words : int
        Instruction memory words (``config.imem_words``).
    dram_bytes : int
        Bytes of on-chip DRAM (at most ``config.dram_bytes``; programs must stay below it).
    beat_bytes : int
        ``config.dram_bytes_per_cycle``.
    config_hash : str
        ``HwConfig.hash`` (16 hex digits).
    clock_hz, baud : int
        The SoC clock and the UART's baud rate.
    has_core : bool
        False for the link-only bring-up SoC (no NPU: ``START`` answers ``BAD_COMMAND``).
    """
    imem_words: int
    dram_bytes: int
    beat_bytes: int
    config_hash: str
    clock_hz: int
    baud: int
    has_core: bool = True

    def __post_init__(self):
        if self.dram_bytes % self.beat_bytes or self.dram_bytes <= 0:
            raise ValueError(f"dram_bytes must be a positive multiple of beat_bytes={self.beat_bytes}, "
                             f"not {self.dram_bytes}")
        if self.dram_bytes > 1 << 24 or self.imem_words * 16 > 1 << 24:
            raise ValueError("a space is limited to 16 MiB (the low 24 address bits)")
        if len(self.config_hash) != 16:
            raise ValueError(f"config_hash must be 16 hex digits, not {self.config_hash!r}")

    @classmethod
    def for_config(cls, config, *, dram_bytes: int, clock_hz: int, baud: int, has_core: bool = True) -> "SocMap":
        """The map of an SoC for ``config`` with ``dram_bytes`` of on-chip DRAM."""
        if dram_bytes > config.dram_bytes:
            raise ValueError(f"dram_bytes={dram_bytes} is more than the config's DRAM ({config.dram_bytes} bytes)")
        return cls(config.imem_words, dram_bytes, config.dram_bytes_per_cycle, config.hash, int(clock_hz),
                   int(baud), has_core)

    @property
    def hash_int(self) -> int:
        return int(self.config_hash, 16)

    def space_bytes(self, space: Space) -> int:
        """The size of a space in bytes."""
        return {Space.DRAM: self.dram_bytes, Space.IMEM: self.imem_words * 16, Space.REGS: REGS_BYTES}[space]

    def identity(self) -> dict[str, int]:
        """The constant REGS fields (the gateware's constants, the driver's expectations)."""
        return {"magic": MAGIC, "version": PROTOCOL_VERSION, "beat_bytes": self.beat_bytes,
                "flags": 0 if self.has_core else 1 << FLAG_BITS["no_core"],
                "config_hash": self.hash_int, "imem_words": self.imem_words, "dram_bytes": self.dram_bytes,
                "clock_hz": self.clock_hz, "baud": self.baud}

    def check_access(self, cmd: Cmd, addr: int, length: int) -> Status:
        """What the SoC answers (before any payload) to ``cmd`` at ``addr`` for ``length`` bytes.

        The gateware implements the same rules; the driver uses this to refuse a bad request early.
        """
        space_id, offset = addr >> 24, addr & 0xFFFFFF
        try:
            space = Space(space_id)
        except ValueError:
            return Status.BAD_ADDRESS
        if offset + length > self.space_bytes(space):
            return Status.BAD_ADDRESS
        if cmd == Cmd.READ and space == Space.IMEM:
            return Status.BAD_ADDRESS
        if cmd == Cmd.WRITE and space == Space.REGS:
            return Status.BAD_ADDRESS
        if cmd == Cmd.WRITE and space == Space.IMEM and (offset % 16 or length % 16):
            return Status.BAD_ADDRESS
        return Status.OK


def decode_regs(raw: bytes) -> dict[str, int]:
    """The REGS space's bytes as ``{field: value}``."""
    if len(raw) != REGS_BYTES:
        raise ValueError(f"REGS is {REGS_BYTES} bytes, got {len(raw)}")
    return {f.name: int.from_bytes(raw[f.offset:f.offset + f.size], "little") for f in REGS.values()}
