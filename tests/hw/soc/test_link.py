"""The host-link protocol engine at byte level in amaranth.sim, with the on-chip DRAM behind it and
the core's control signals driven by the test: every command, status and the load-session rule."""

import numpy as np
import pytest
from amaranth.hdl import Module
from amaranth.sim import Simulator

from npuforge.config import HwConfig
from npuforge.hw.soc.dram import OnChipDram
from npuforge.hw.soc.host import HostLinkClient
from npuforge.hw.soc.link import HostLink
from npuforge.hw.soc.memmap import (REGS_BYTES, STATUS_BITS, SYNC_RSP, Cmd, SocMap, Space, Status, crc16,
                                    decode_regs, space_base)

CFG = HwConfig(rows=4, cols=4, spad_kib=1, acc_kib=1, dram_bytes_per_cycle=4, dram_latency=2, imem_words=16)
MAP = SocMap.for_config(CFG, dram_bytes=256, clock_hz=1_000_000, baud=100_000)


def _session(script, busy=lambda: 0):
    """Run ``script`` (a list of request frames) through the link; returns replies, imem writes, starts."""
    m = Module()
    m.submodules.link = link = HostLink(MAP, timeout_cycles=64)
    m.submodules.dram = dram = OnChipDram(CFG, MAP.dram_bytes)
    m.d.comb += [dram.host_addr.eq(link.dram_addr), dram.host_re.eq(link.dram_re), dram.host_we.eq(link.dram_we),
                 dram.host_wstrb.eq(link.dram_wstrb), dram.host_wdata.eq(link.dram_wdata),
                 link.dram_rdata.eq(dram.host_rdata), link.tx_ready.eq(1)]
    out = {"tx": [], "imem": [], "starts": 0}

    async def tb(ctx):
        for frame, is_busy in script:
            ctx.set(link.busy, is_busy)
            for byte in frame:
                ctx.set(link.rx_data, byte)
                ctx.set(link.rx_valid, 1)
                await ctx.tick()
                ctx.set(link.rx_valid, 0)
                await ctx.tick().repeat(2)
            # Wait for the whole reply: the link ignores requests while it answers, as the host never sends one then.
            idle = 0
            while idle < 1000:
                await ctx.tick()
                idle += 1

    async def monitor(ctx):
        async for _, _, valid, data, we, addr, word, start in ctx.tick().sample(
                link.tx_valid, link.tx_data, link.imem_we, link.imem_addr, link.imem_data, link.start):
            if valid:
                out["tx"].append(data)
            if we:
                out["imem"].append((addr, word))
            out["starts"] += start

    sim = Simulator(m)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.add_process(monitor)
    sim.run_until(1e-6 * (sum(len(f) * 3 + 1000 for f, _ in script) + 1000))
    return out


def _replies(tx):
    """Split the transmitted bytes into (status, data) replies, checking sync and CRC."""
    out, i = [], 0
    while i < len(tx):
        assert tx[i] == SYNC_RSP
        n = tx[i + 2] | tx[i + 3] << 8
        body = bytes(tx[i + 1:i + 4 + n])
        crc = tx[i + 4 + n] | tx[i + 5 + n] << 8
        assert crc == crc16(body)
        out.append((Status(body[0]), body[3:]))
        i += 6 + n
    return out


F = HostLinkClient.frame


def _start_payload(hash_hex, count):
    return int(hash_hex, 16).to_bytes(8, "little") + count.to_bytes(4, "little")


def test_regs_dram_roundtrip_and_session_count():
    data = bytes(np.random.default_rng(1).integers(0, 256, 13, dtype=np.uint8))
    out = _session([
        (F(Cmd.BEGIN, 0, 0), 0),
        (F(Cmd.WRITE, space_base(Space.DRAM) + 5, len(data), data), 0),
        (F(Cmd.READ, space_base(Space.DRAM) + 3, 17), 0),
        (F(Cmd.READ, space_base(Space.REGS), REGS_BYTES), 0),
    ])
    r = _replies(out["tx"])
    assert [s for s, _ in r] == [Status.OK] * 4
    assert r[2][1] == bytes(2) + data + bytes(2)          # BEGIN zeroed the rest
    regs = decode_regs(r[3][1])
    for k, v in MAP.identity().items():
        assert regs[k] == v, k
    assert regs["session_bytes"] == 13
    assert out["starts"] == 0


def test_imem_words_are_assembled_little_endian():
    words = [int.from_bytes(np.random.default_rng(i).bytes(16), "little") for i in range(2)]
    payload = b"".join(w.to_bytes(16, "little") for w in words)
    out = _session([(F(Cmd.WRITE, space_base(Space.IMEM) + 32, 32, payload), 0)])
    assert _replies(out["tx"]) == [(Status.OK, b"")]
    assert out["imem"] == [(2, words[0]), (3, words[1])]


@pytest.mark.parametrize("frame,status", [
    (F(Cmd.WRITE, space_base(Space.IMEM) + 8, 16, bytes(16)), Status.BAD_ADDRESS),      # not word aligned
    (F(Cmd.READ, space_base(Space.IMEM), 16), Status.BAD_ADDRESS),                        # write only
    (F(Cmd.WRITE, space_base(Space.REGS), 4, bytes(4)), Status.BAD_ADDRESS),             # read only
    (F(Cmd.READ, space_base(Space.DRAM) + 250, 8), Status.BAD_ADDRESS),                   # past the end
    (F(Cmd.READ, 0x07000000, 1), Status.BAD_ADDRESS),                                     # no such space
    (bytes([0xA5]) + bytes([0x77, 0, 0, 0, 0, 0, 0]) + crc16(bytes([0x77, 0, 0, 0, 0, 0, 0])).to_bytes(2, "little"),
     Status.BAD_COMMAND),
    (F(Cmd.START, 0, 4, bytes(4)), Status.BAD_COMMAND),                                   # wrong START length
])
def test_refused_requests(frame, status):
    out = _session([(frame, 0), (F(Cmd.READ, space_base(Space.REGS), REGS_BYTES), 0)])
    r = _replies(out["tx"])
    assert r[0] == (status, b"")
    assert r[1][0] == Status.OK          # the framing stayed in step
    assert out["imem"] == [] and out["starts"] == 0
    if status == Status.BAD_ADDRESS:       # the driver's copy of the rule agrees with the gateware
        addr, length = int.from_bytes(frame[2:6], "little"), int.from_bytes(frame[6:8], "little")
        assert MAP.check_access(Cmd(frame[1]), addr, length) == Status.BAD_ADDRESS


def test_bad_checksum_taints_until_begin_and_start_checks_hash_and_count():
    good = F(Cmd.WRITE, space_base(Space.DRAM), 4, b"\x01\x02\x03\x04")
    bad = bytearray(good)
    bad[9] ^= 0x40
    h = MAP.config_hash
    other = f"{int(h, 16) ^ 0x100:016x}"
    out = _session([
        (F(Cmd.BEGIN, 0, 0), 0),
        (bytes(bad), 0),                                            # stored, then found corrupt
        (F(Cmd.START, 0, 12, _start_payload(h, 0)), 0),             # tainted: refused
        (F(Cmd.BEGIN, 0, 0), 0),
        (good, 0),
        (F(Cmd.START, 0, 12, _start_payload(other, 4)), 0),         # another config
        (F(Cmd.START, 0, 12, _start_payload(h, 3)), 0),             # a byte missing
        (F(Cmd.WRITE, space_base(Space.DRAM), 4, bytes(4)), 1),     # busy: refused
        (F(Cmd.READ, space_base(Space.REGS), REGS_BYTES), 1),       # registers stay readable
        (F(Cmd.START, 0, 12, _start_payload(h, 4)), 0),             # everything acknowledged: starts
    ])
    r = _replies(out["tx"])
    assert [s for s, _ in r] == [Status.OK, Status.BAD_CHECKSUM, Status.NOT_LOADED, Status.OK, Status.OK,
                                 Status.BAD_HASH, Status.NOT_LOADED, Status.BUSY, Status.OK, Status.OK]
    regs = decode_regs(r[8][1])
    assert regs["status"] >> STATUS_BITS["busy"] & 1 and not regs["status"] >> STATUS_BITS["tainted"] & 1
    assert out["starts"] == 1


def test_truncated_frame_times_out_without_reply_and_taints():
    frame = F(Cmd.WRITE, space_base(Space.DRAM), 8, bytes(range(8)))
    out = _session([(frame[:12], 0), (F(Cmd.READ, space_base(Space.REGS), REGS_BYTES), 0)])
    r = _replies(out["tx"])
    assert len(r) == 1 and r[0][0] == Status.OK
    assert decode_regs(r[0][1])["status"] >> STATUS_BITS["tainted"] & 1
