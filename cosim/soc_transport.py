"""A host-driver transport into the simulated SoC: cocotb drives and samples its UART pins.

The host driver (:mod:`npuforge.hw.soc.host`) is blocking code; it runs in a thread
started with cocotb's ``bridge``, and every :class:`SimTransport` call goes back into the
simulation with ``resume``, so the simulation advances only while the driver waits on
the link, exactly as a board would. Time on the transport is simulated time converted
at the SoC's nominal clock, so the driver's timeouts mean the same as on a board.

:class:`UartPins` is the bit-level part: ``send`` puts 8N1 frames on ``rx`` with the
SoC's bit time, a monitor task samples ``tx`` in the middle of each bit.
``corrupt_next`` flips one bit of a byte about to be sent (fault injection for tests).
"""

from __future__ import annotations

import collections

from cocotb.triggers import Event, FallingEdge, First, Timer
from cocotb.utils import get_sim_time

from ..hw.soc.host import Transport

try:                                    # cocotb 2.x names (bridge/resume)
    from cocotb import bridge, resume   # type: ignore[attr-defined]
except ImportError:                     # pragma: no cover - exported lazily in some versions
    from cocotb._bridge import bridge, resume

__all__ = ["UartPins", "SimTransport", "bridge"]


class UartPins:
    """Drives ``dut.rx`` and samples ``dut.tx`` at ``bit_ns`` per bit (8N1, LSB first)."""

    def __init__(self, dut, bit_ns: int):
        if bit_ns % 2:
            raise ValueError(f"bit_ns must be even (the monitor samples at half bits), not {bit_ns}")
        self.dut = dut
        self.bit_ns = bit_ns
        self.received: collections.deque[int] = collections.deque()
        self.arrived = Event()
        self.framing_errors = 0
        self._corrupt: list[tuple[int, int]] = []     # (byte index from now, bit mask)
        dut.rx.value = 1

    def corrupt(self, after: int, mask: int = 0x01) -> None:
        """XOR ``mask`` into the byte sent ``after`` bytes from now."""
        self._corrupt.append((after, mask))

    async def send(self, data: bytes) -> None:
        for byte in data:
            mask = 0
            kept = []
            for after, m in self._corrupt:
                if after == 0:
                    mask ^= m
                else:
                    kept.append((after - 1, m))
            self._corrupt = kept
            byte ^= mask
            for bit in [0] + [(byte >> i) & 1 for i in range(8)] + [1]:
                self.dut.rx.value = bit
                await Timer(self.bit_ns, "ns")

    async def monitor(self) -> None:
        """Forever: receive bytes from ``dut.tx`` into ``received``."""
        dut, half = self.dut, self.bit_ns // 2
        while True:
            await FallingEdge(dut.tx)
            await Timer(half, "ns")
            if int(dut.tx.value):
                continue                # a glitch, not a start bit
            byte = 0
            for i in range(8):
                await Timer(self.bit_ns, "ns")
                byte |= int(dut.tx.value) << i
            await Timer(self.bit_ns, "ns")
            if not int(dut.tx.value):
                self.framing_errors += 1
            self.received.append(byte)
            self.arrived.set()


class SimTransport(Transport):
    """:class:`~npuforge.hw.soc.host.Transport` over :class:`UartPins`; call only from a bridged thread.

    Parameters
    ----------
    pins : UartPins
    clock_hz : int
        The SoC's nominal clock, to convert seconds to simulated time.
    period_ns : int
        The test bench's clock period.
    """

    def __init__(self, pins: UartPins, clock_hz: int, period_ns: int):
        self.pins = pins
        self.ns_per_s = clock_hz * period_ns

    def write(self, data: bytes) -> None:
        resume(self.pins.send)(bytes(data))

    def read(self, n: int, timeout_s: float) -> bytes:
        return resume(self._read)(n, timeout_s)

    async def _read(self, n: int, timeout_s: float) -> bytes:
        pins = self.pins
        deadline = get_sim_time("ns") + timeout_s * self.ns_per_s
        while len(pins.received) < n:
            left = deadline - get_sim_time("ns")
            if left <= 0:
                break
            pins.arrived.clear()
            await First(pins.arrived.wait(), Timer(max(1, round(left)), "ns"))
        k = min(n, len(pins.received))
        return bytes(pins.received.popleft() for _ in range(k))

    def discard_input(self) -> None:
        self.pins.received.clear()

    def now(self) -> float:
        return resume(self._now)()

    async def _now(self) -> float:
        return get_sim_time("ns") / self.ns_per_s

    def sleep(self, seconds: float) -> None:
        resume(self._sleep)(seconds)

    async def _sleep(self, seconds: float) -> None:
        await Timer(max(1, round(seconds * self.ns_per_s)), "ns")
