"""The shared memory map: CRC, register layout, access rules and the identity the driver checks."""

from pathlib import Path

import pytest

from npuforge.config import HwConfig, load_config
from npuforge.hw.counters import COUNTER_NAMES
from npuforge.hw.soc.host import BoardError, ConfigMismatch, ProtocolError, check_identity
from npuforge.hw.soc.memmap import (MAGIC, REGS, REGS_BYTES, Cmd, SocMap, Space, Status, crc16, decode_regs,
                                    space_base)

CFG = HwConfig(rows=4, cols=4, spad_kib=1, acc_kib=1, dram_bytes_per_cycle=4, imem_words=64)
MAP = SocMap.for_config(CFG, dram_bytes=4096, clock_hz=12_000_000, baud=115200)

REPO = Path(__file__).resolve().parents[3]


def test_crc16_ccitt_false_check_value():
    assert crc16(b"123456789") == 0x29B1
    assert crc16(b"") == 0xFFFF


def test_crc16_equals_the_byte_step_the_gateware_unrolls():
    import random
    from npuforge.hw.soc.memmap import crc16_byte_step
    rng = random.Random(3)
    for n in (1, 2, 7, 300):
        data = bytes(rng.randrange(256) for _ in range(n))
        init = rng.randrange(1 << 16)
        folded = init
        for byte in data:
            folded = crc16_byte_step(folded, byte)
        assert crc16(data, init) == folded


def test_regs_layout_is_packed_and_holds_every_counter():
    offset = 0
    for f in REGS.values():
        assert f.offset == offset
        offset += f.size
    assert offset == REGS_BYTES
    assert {f"counter_{n}" for n in COUNTER_NAMES} <= set(REGS)


def test_identity_roundtrip_through_regs_bytes():
    values = dict.fromkeys(REGS, 0) | MAP.identity()
    raw = b"".join(values[f.name].to_bytes(f.size, "little") for f in REGS.values())
    regs = decode_regs(raw)
    assert check_identity(regs, CFG) == MAP
    assert regs["magic"] == MAGIC and regs["config_hash"] == int(CFG.hash, 16)


def test_identity_errors_are_specific():
    good = dict.fromkeys(REGS, 0) | MAP.identity()
    with pytest.raises(ProtocolError, match="not an npuforge SoC"):
        check_identity(good | {"magic": 0x1234}, CFG)
    with pytest.raises(ProtocolError, match="protocol 9"):
        check_identity(good | {"version": 9}, CFG)
    other = CFG.replace(name="other")
    with pytest.raises(ConfigMismatch, match=f"built for config hash {CFG.hash}.*other \\(hash {other.hash}\\)"):
        check_identity(good, other)
    with pytest.raises(BoardError, match="link-only bring-up SoC"):
        check_identity(good | {"flags": 1}, CFG)


@pytest.mark.parametrize("cmd,addr,length,status", [
    (Cmd.READ, space_base(Space.DRAM) + 4090, 6, Status.OK),
    (Cmd.READ, space_base(Space.DRAM) + 4090, 7, Status.BAD_ADDRESS),
    (Cmd.WRITE, space_base(Space.IMEM) + 16 * 63, 16, Status.OK),
    (Cmd.WRITE, space_base(Space.IMEM) + 16 * 63, 32, Status.BAD_ADDRESS),
    (Cmd.WRITE, space_base(Space.IMEM) + 4, 16, Status.BAD_ADDRESS),
    (Cmd.READ, space_base(Space.IMEM), 16, Status.BAD_ADDRESS),
    (Cmd.WRITE, space_base(Space.REGS), 1, Status.BAD_ADDRESS),
    (Cmd.READ, space_base(Space.REGS), REGS_BYTES, Status.OK),
    (Cmd.READ, 0x05000000, 1, Status.BAD_ADDRESS),
])
def test_check_access(cmd, addr, length, status):
    assert MAP.check_access(cmd, addr, length) == status


def test_socmap_validation():
    with pytest.raises(ValueError, match="more than the config's DRAM"):
        SocMap.for_config(CFG, dram_bytes=CFG.dram_bytes * 2, clock_hz=1, baud=1)
    with pytest.raises(ValueError, match="multiple of beat_bytes=4"):
        SocMap.for_config(CFG, dram_bytes=4098, clock_hz=1, baud=1)
    assert load_config(REPO / "configs/icebreaker-4x4.yaml").name == "icebreaker-4x4"
