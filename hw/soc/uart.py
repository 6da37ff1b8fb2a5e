"""A UART (8 data bits, no parity, one stop bit), receiver and transmitter, for the host link.

``divisor`` is the number of clock cycles per bit (``clock_hz // baud``); it is validated
here and nowhere else. The receiver synchronises its pin through two flip-flops, finds the
falling edge of a start bit, samples every bit in its middle, and drops a frame whose stop
bit is low (a break or a wrong baud rate) with ``error`` high for one cycle. The
transmitter takes a byte when ``valid & ready`` and drives the pin idle-high otherwise.
"""


from amaranth.hdl import Cat, Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = ["UartRx", "UartTx", "check_divisor", "MIN_DIVISOR"]

MIN_DIVISOR = 4


def check_divisor(clock_hz: int, baud: int) -> int:
    """Cycles per bit for ``clock_hz`` and ``baud``.

    Raises
    ------
    ValueError
        When the baud rate is not at most ``clock_hz / MIN_DIVISOR`` or is off by more than 2 %.
    """
    if baud <= 0 or clock_hz <= 0:
        raise ValueError(f"clock_hz and baud must be positive, not {clock_hz} and {baud}")
    divisor = round(clock_hz / baud)
    if divisor < MIN_DIVISOR:
        raise ValueError(f"baud {baud} needs at least {MIN_DIVISOR} clock cycles per bit; "
                         f"a {clock_hz} Hz clock allows at most {clock_hz // MIN_DIVISOR} baud")
    actual = clock_hz / divisor
    if abs(actual - baud) / baud > 0.02:
        raise ValueError(f"baud {baud} from a {clock_hz} Hz clock: divisor {divisor} gives {actual:.0f} baud, "
                         f"more than 2 % off")
    return divisor


def _divisor(divisor: int) -> int:
    if not (isinstance(divisor, int) and MIN_DIVISOR <= divisor < 1 << 24):
        raise ValueError(f"divisor must be an integer in {MIN_DIVISOR}..{(1 << 24) - 1}, not {divisor!r}")
    return divisor


class UartRx(wiring.Component):
    """UART receiver.

    Ports
    -----
    rx : In(1), the pin (idle high).
    data : Out(8), valid with ``valid``.
    valid : Out(1), one cycle per received byte.
    error : Out(1), one cycle for a frame with a low stop bit (the byte is dropped).
    """

    rx: In(1, init=1)
    data: Out(8)
    valid: Out(1)
    error: Out(1)

    def __init__(self, divisor: int):
        self._MustUse__silence = True       # a rejected divisor must not also warn "created but never used"
        self.divisor = _divisor(divisor)
        self._MustUse__silence = False
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        d = self.divisor
        sync_pin = Signal(2, init=0b11)
        m.d.sync += sync_pin.eq(Cat(self.rx, sync_pin[0]))
        pin = sync_pin[1]
        timer = Signal(range(d + d // 2 + 1))
        bits = Signal(range(9))
        shreg = Signal(8)
        m.d.sync += [self.valid.eq(0), self.error.eq(0)]
        with m.FSM():
            with m.State("IDLE"):
                with m.If(~pin):
                    # The first sample is in the middle of bit 0: one and a half bits after the edge.
                    m.d.sync += [timer.eq(d + d // 2 - 1), bits.eq(0)]
                    m.next = "BITS"
            with m.State("BITS"):
                with m.If(timer != 0):
                    m.d.sync += timer.eq(timer - 1)
                with m.Else():
                    m.d.sync += [shreg.eq(Cat(shreg[1:], pin)), bits.eq(bits + 1), timer.eq(d - 1)]
                    with m.If(bits == 7):
                        m.next = "STOP"
            with m.State("STOP"):
                with m.If(timer != 0):
                    m.d.sync += timer.eq(timer - 1)
                with m.Else():
                    with m.If(pin):
                        m.d.sync += [self.data.eq(shreg), self.valid.eq(1)]
                        m.next = "IDLE"
                    with m.Else():
                        m.d.sync += self.error.eq(1)
                        m.next = "BREAK"
            with m.State("BREAK"):
                # Wait for the line to go idle again before looking for a start bit.
                with m.If(pin):
                    m.next = "IDLE"
        return m


class UartTx(wiring.Component):
    """UART transmitter.

    Ports
    -----
    tx : Out(1), the pin (idle high).
    data : In(8), taken with ``valid & ready``.
    valid : In(1).
    ready : Out(1), high while idle (never depends on ``valid``).
    """

    tx: Out(1, init=1)
    data: In(8)
    valid: In(1)
    ready: Out(1)

    def __init__(self, divisor: int):
        self._MustUse__silence = True       # a rejected divisor must not also warn "created but never used"
        self.divisor = _divisor(divisor)
        self._MustUse__silence = False
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        d = self.divisor
        timer = Signal(range(d))
        shreg = Signal(10, init=0x3FF)          # stop bit, 8 data bits (LSB first), start bit
        left = Signal(range(11))
        m.d.comb += [self.ready.eq(left == 0), self.tx.eq(shreg[0])]
        with m.If(left == 0):
            with m.If(self.valid):
                m.d.sync += [shreg.eq(Cat(0, self.data, 1)), left.eq(10), timer.eq(d - 1)]
        with m.Elif(timer != 0):
            m.d.sync += timer.eq(timer - 1)
        with m.Else():
            m.d.sync += [shreg.eq(Cat(shreg[1:], 1)), left.eq(left - 1), timer.eq(d - 1)]
        return m
