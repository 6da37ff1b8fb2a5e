"""Host-link fault scenarios against the simulated SoC, for :func:`npuforge.cosim.soc_sim.run_soc_sim`.

Each function takes the simulation's transport first (the calling convention of
:mod:`npuforge.cosim.soc_bench`) and returns a JSON-able record of what the SoC answered,
so that tests check the protocol's error paths on the real gateware: a corrupted
frame, a wrong config hash, a truncated frame, a host-side timeout. In every case the
NPU must not have been started (``busy`` and ``done`` stay low).
"""

from __future__ import annotations

from ..hw.soc.host import HostLinkClient, LinkTimeout, ProtocolError
from ..hw.soc.memmap import STATUS_BITS, Cmd, Space, space_base
from ..isa.spec import WORD_BYTES

__all__ = ["corrupted_write", "wrong_hash", "truncated_frame", "reply_timeout", "driver_errors"]


def _program_bytes(bundle_dir: str) -> tuple[bytes, object]:
    from ..compiler.bundle import load_bundle
    bundle = load_bundle(bundle_dir)
    return b"".join(w.to_bytes(WORD_BYTES, "little") for w in bundle.image.words), bundle


def _flags(client: HostLinkClient) -> dict:
    """Status bits, the session's byte count and the cycle counter (a start clears it: unchanged
    counters after a refused START prove that the NPU did not run)."""
    regs = client.regs()
    return {name: bool(regs["status"] >> bit & 1) for name, bit in STATUS_BITS.items()} | {
        "session_bytes": regs["session_bytes"], "cycles": regs["counter_cycles"],
        "instructions": regs["counter_instructions"]}


def corrupted_write(transport, bundle_dir: str) -> dict:
    """BEGIN, a WRITE with one flipped payload bit, then START claiming every byte arrived."""
    client = HostLinkClient(transport, timeout_s=0.01)
    program, bundle = _program_bytes(bundle_dir)
    before = _flags(client)
    client.begin()
    part = program[:64]
    # Flip a payload bit on the wire: sync(1) + header(7) + 5 bytes into the payload.
    transport.pins.corrupt(after=1 + 7 + 5, mask=0x10)
    status, _ = client.request(Cmd.WRITE, space_base(Space.IMEM), len(part), part, expect=None)
    after_write = _flags(client)
    start = client.start(bundle.config.hash, len(part), expect=None)
    return {"before": before, "write": status.name, "after_write": after_write, "start": start.name,
            "after_start": _flags(client)}


def wrong_hash(transport, bundle_dir: str) -> dict:
    """A clean load, then START with another config's hash; then the right hash."""
    client = HostLinkClient(transport, timeout_s=0.01)
    program, bundle = _program_bytes(bundle_dir)
    before = _flags(client)
    client.begin()
    sent = client.write(Space.IMEM, 0, program)
    other = f"{int(bundle.config.hash, 16) ^ 1:016x}"
    bad = client.start(other, sent, expect=None)
    after_bad = _flags(client)
    wrong_count = client.start(bundle.config.hash, sent + 1, expect=None)
    return {"before": before, "start_other_hash": bad.name, "after": after_bad, "start_wrong_count": wrong_count.name,
            "after_wrong_count": _flags(client)}


def truncated_frame(transport, bundle_dir: str) -> dict:
    """BEGIN, then a WRITE frame cut off mid-payload; the SoC must drop it, taint the session, resync."""
    client = HostLinkClient(transport, timeout_s=0.01)
    program, bundle = _program_bytes(bundle_dir)
    before = _flags(client)
    client.begin()
    frame = client.frame(Cmd.WRITE, space_base(Space.IMEM), 32, program[:32])
    transport.write(frame[:1 + 7 + 20])        # header and 20 of 32 payload bytes, then silence
    got = transport.read(1, 0.004)             # past the SoC's 2 ms frame timeout: no reply may come
    flags = _flags(client)                     # the link answers again after the timeout
    start = client.start(bundle.config.hash, 0, expect=None)
    return {"before": before, "reply_bytes": len(got), "after": flags, "start": start.name,
            "after_start": _flags(client)}


def reply_timeout(transport, timeout_s: float = 0.001) -> dict:
    """A WRITE header announcing more payload than is sent: the driver times out with a clear message."""
    client = HostLinkClient(transport, timeout_s=timeout_s)
    frame = client.frame(Cmd.WRITE, space_base(Space.DRAM), 16, bytes(16))
    transport.write(frame[:1 + 7 + 4])
    try:
        client._reply("WRITE DRAM 0x0+16")
    except LinkTimeout as e:
        transport.sleep(0.003)                 # let the SoC drop the frame before the next call
        return {"raised": "LinkTimeout", "message": str(e)}
    return {"raised": None}


def driver_errors(transport, bundle_dir: str) -> dict:
    """What the driver raises for a BAD_ADDRESS request (a READ past the DRAM)."""
    client = HostLinkClient(transport, timeout_s=0.01)
    try:
        client.read(Space.DRAM, client.regs()["dram_bytes"] - 4, 8)
    except ProtocolError as e:
        return {"raised": type(e).__name__, "status": e.status.name if e.status is not None else None,
                "message": str(e)}
    return {"raised": None}

