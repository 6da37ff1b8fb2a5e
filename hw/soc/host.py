"""The host driver: runs a bundle on an NPU SoC over an abstract byte transport.

The same code talks to a board (:class:`SerialTransport`, pyserial) and to the SoC in
simulation (:class:`npuforge.cosim.soc_transport.SimTransport`, cocotb driving the UART
pins), in Glasgow's habit: only the transport differs.

Layers
------
- :class:`Transport`: ``write(bytes)`` and ``read(n, timeout_s)``.
- :class:`HostLinkClient`: one request, one reply, with the frame format, CRC and
  statuses of :mod:`npuforge.hw.soc.memmap`; raises :class:`ProtocolError` /
  :class:`LinkTimeout` with the command, the address and what went wrong.
- :func:`run_on_board`: the ``fpga`` fidelity. Checks the SoC's identity and config hash,
  opens a load session (``BEGIN``), writes the program and the non-zero parts of the DRAM
  image, starts the NPU only through ``START`` (which the SoC refuses unless every byte
  was acknowledged), polls until done, reads the counters and the output tensors.
"""

from __future__ import annotations

import abc
import time

import numpy as np

from ...isa.spec import WORD_BYTES, ErrorCode
from .memmap import (FLAG_BITS, MAGIC, MAX_LEN, PROTOCOL_VERSION, REGS, REGS_BYTES, STATUS_BITS, SYNC_REQ,
                     SYNC_RSP, Cmd, SocMap, Space, Status, crc16, decode_regs, space_base)

__all__ = ["Transport", "SerialTransport", "HostLinkClient", "BoardError", "ProtocolError", "LinkTimeout",
           "ConfigMismatch", "run_on_board", "run_bundle_fpga", "check_identity", "CHUNK", "DEFAULT_BAUD"]

CHUNK = 256     # payload bytes per WRITE / READ frame: a corrupted frame costs little to resend


class BoardError(RuntimeError):
    """Talking to the board failed; the message says what and where."""


class ProtocolError(BoardError):
    """A reply was malformed, failed its checksum, or carried a status other than OK."""

    def __init__(self, message: str, status: Status | None = None):
        super().__init__(message)
        self.status = status


class LinkTimeout(BoardError):
    """No (complete) reply within the timeout."""


class ConfigMismatch(BoardError):
    """The SoC was built for another config than the bundle."""


class Transport(abc.ABC):
    """A byte pipe to the SoC's UART."""

    @abc.abstractmethod
    def write(self, data: bytes) -> None:
        """Send ``data``."""

    @abc.abstractmethod
    def read(self, n: int, timeout_s: float) -> bytes:
        """Up to ``n`` bytes; fewer when ``timeout_s`` passes first."""

    def discard_input(self) -> None:
        """Drop bytes already received (before a new request after an error)."""

    def close(self) -> None:
        """Release the port."""

    def now(self) -> float:
        """Seconds on the transport's clock (the simulation's own time in simulation)."""
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        """Let ``seconds`` pass on the transport's clock."""
        time.sleep(seconds)


class SerialTransport(Transport):
    """A serial port through pyserial (``pip install pyserial``; part of the ``fpga`` extra).

    Parameters
    ----------
    port : str
        e.g. ``/dev/ttyUSB1`` (iCEBreaker: the FTDI's second interface) or ``COM5``.
    baud : int
    """

    def __init__(self, port: str, baud: int):
        try:
            import serial
        except ImportError:
            raise BoardError("the host driver needs pyserial: pip install -e '.[fpga]' (or pip install pyserial)") \
                from None
        try:
            self._port = serial.Serial(port, baudrate=baud, timeout=1.0)
        except serial.SerialException as e:
            raise BoardError(f"cannot open serial port {port}: {e}") from None

    def write(self, data: bytes) -> None:
        self._port.write(data)
        self._port.flush()

    def read(self, n: int, timeout_s: float) -> bytes:
        self._port.timeout = timeout_s
        return self._port.read(n)

    def discard_input(self) -> None:
        self._port.reset_input_buffer()

    def close(self) -> None:
        self._port.close()


def _where(cmd: Cmd, addr: int, length: int) -> str:
    space = Space(addr >> 24).name if (addr >> 24) in Space._value2member_map_ else f"space {addr >> 24}"
    return f"{cmd.name} {space} 0x{addr & 0xFFFFFF:x}+{length}"


class HostLinkClient:
    """Requests and replies over a :class:`Transport` (frame format in :mod:`~npuforge.hw.soc.memmap`).

    Parameters
    ----------
    transport : Transport
    timeout_s : float
        How long to wait for each reply (the SoC answers within a frame time, except BEGIN,
        which zeroes the memories first).
    """

    def __init__(self, transport: Transport, timeout_s: float = 2.0):
        self.transport = transport
        self.timeout_s = timeout_s

    @staticmethod
    def frame(cmd: Cmd, addr: int, length: int, payload: bytes = b"") -> bytes:
        """The request frame's bytes."""
        body = bytes([int(cmd)]) + addr.to_bytes(4, "little") + length.to_bytes(2, "little") + payload
        return bytes([SYNC_REQ]) + body + crc16(body).to_bytes(2, "little")

    def request(self, cmd: Cmd, addr: int = 0, length: int = 0, payload: bytes = b"", *,
                expect: Status | None = Status.OK) -> tuple[Status, bytes]:
        """Send one request and return ``(status, data)``.

        Parameters
        ----------
        expect : Status or None
            Raise :class:`ProtocolError` unless the reply has this status (None: return any).

        Raises
        ------
        LinkTimeout, ProtocolError
        """
        if not 0 <= length <= MAX_LEN:
            raise ValueError(f"length must be in 0..{MAX_LEN}, not {length}")
        if cmd.has_payload and len(payload) != length:
            raise ValueError(f"{cmd.name}: payload of {len(payload)} bytes, length field {length}")
        where = _where(cmd, addr, length)
        self.transport.write(self.frame(cmd, addr, length, payload))
        status, data = self._reply(where)
        if expect is not None and status != expect:
            raise ProtocolError(f"the board answered {status.name} to {where}: {_explain(status)}", status)
        return status, data

    def _read_exact(self, n: int, where: str, what: str) -> bytes:
        got = self.transport.read(n, self.timeout_s)
        if len(got) < n:
            raise LinkTimeout(f"no reply to {where} within {self.timeout_s} s ({what}: {len(got)} of {n} bytes "
                              f"came): is the board programmed with the npuforge SoC, and are the port and baud "
                              f"rate right?")
        return got

    def _reply(self, where: str) -> tuple[Status, bytes]:
        sync = self._read_exact(1, where, "sync byte")
        if sync[0] != SYNC_RSP:
            self.transport.discard_input()
            raise ProtocolError(f"reply to {where} starts with 0x{sync[0]:02x}, not the sync byte 0x{SYNC_RSP:02x} "
                                f"(another program on the port, or a wrong baud rate?)")
        head = self._read_exact(3, where, "header")
        length = int.from_bytes(head[1:3], "little")
        data = self._read_exact(length, where, "data") if length else b""
        crc = int.from_bytes(self._read_exact(2, where, "checksum"), "little")
        if crc != crc16(head + data):
            self.transport.discard_input()
            raise ProtocolError(f"reply to {where} failed its checksum (0x{crc:04x}, computed "
                                f"0x{crc16(head + data):04x}): line noise?")
        try:
            status = Status(head[0])
        except ValueError:
            raise ProtocolError(f"reply to {where} has unknown status {head[0]}") from None
        return status, data

    # ---- commands ----------------------------------------------------------------------
    def read(self, space: Space, offset: int, length: int) -> bytes:
        """``length`` bytes from a space, in frames of at most :data:`CHUNK` bytes."""
        out = bytearray()
        for start in range(0, length, CHUNK):
            n = min(CHUNK, length - start)
            _, data = self.request(Cmd.READ, space_base(space) + offset + start, n)
            if len(data) != n:
                raise ProtocolError(f"READ {space.name} 0x{offset + start:x}+{n}: got {len(data)} bytes")
            out += data
        return bytes(out)

    def write(self, space: Space, offset: int, data: bytes) -> int:
        """Write ``data`` in frames of at most :data:`CHUNK` bytes; returns the bytes sent."""
        for start in range(0, len(data), CHUNK):
            part = data[start:start + CHUNK]
            self.request(Cmd.WRITE, space_base(space) + offset + start, len(part), part)
        return len(data)

    def regs(self) -> dict[str, int]:
        """The whole REGS space, decoded."""
        return decode_regs(self.read(Space.REGS, 0, REGS_BYTES))

    def status(self) -> dict[str, int]:
        """status, error, error_pc and session_bytes (one short READ)."""
        first, last = REGS["status"], REGS["session_bytes"]
        raw = self.read(Space.REGS, first.offset, last.offset + last.size - first.offset)
        out = {}
        for name in ("status", "error", "error_pc", "session_bytes"):
            f = REGS[name]
            out[name] = int.from_bytes(raw[f.offset - first.offset:f.offset - first.offset + f.size], "little")
        return out

    def begin(self) -> None:
        """Zero DRAM and IMEM and open a load session."""
        self.request(Cmd.BEGIN)

    def start(self, config_hash: str, session_bytes: int, *, expect: Status | None = Status.OK) -> Status:
        """Ask the SoC to start the NPU; it checks the hash and the byte count of the session."""
        payload = int(config_hash, 16).to_bytes(8, "little") + session_bytes.to_bytes(4, "little")
        status, _ = self.request(Cmd.START, 0, len(payload), payload, expect=expect)
        return status


def _explain(status: Status) -> str:
    return {
        Status.BAD_CHECKSUM: "the request was corrupted on the way (the load session is now tainted; start again "
                             "with BEGIN)",
        Status.BAD_COMMAND: "the SoC does not know this command (protocol version mismatch?)",
        Status.BAD_ADDRESS: "outside the SoC's memory map (see the REGS identity for the sizes)",
        Status.BUSY: "the NPU is running",
        Status.BAD_HASH: "the SoC was built for another config",
        Status.NOT_LOADED: "not every byte of the program and data was acknowledged in this session; "
                           "the NPU was not started",
    }.get(status, status.name)


def soc_map_from_regs(regs: dict[str, int]) -> SocMap:
    """The SoC's map as it reports it (identity fields of REGS)."""
    return SocMap(imem_words=regs["imem_words"], dram_bytes=regs["dram_bytes"], beat_bytes=regs["beat_bytes"],
                  config_hash=f"{regs['config_hash']:016x}", clock_hz=regs["clock_hz"], baud=regs["baud"],
                  has_core=not regs["flags"] >> FLAG_BITS["no_core"] & 1)


def check_identity(regs: dict[str, int], config) -> SocMap:
    """Check the magic, the protocol version and the config hash; return the SoC's map.

    Raises
    ------
    ProtocolError
        Not an npuforge SoC, or another protocol version.
    ConfigMismatch
        The SoC runs another config.
    """
    if regs["magic"] != MAGIC:
        raise ProtocolError(f"the device answered but its magic is 0x{regs['magic']:08x}, not 0x{MAGIC:08x}: "
                            f"not an npuforge SoC")
    if regs["version"] != PROTOCOL_VERSION:
        raise ProtocolError(f"the SoC speaks host-link protocol {regs['version']}, this driver {PROTOCOL_VERSION}")
    smap = soc_map_from_regs(regs)
    if not smap.has_core:
        raise BoardError("the board runs the link-only bring-up SoC (no NPU core: the core does not fit this "
                         "board); it answers `npuforge board info` and DRAM reads/writes but cannot run bundles")
    if smap.config_hash != config.hash:
        raise ConfigMismatch(f"the board's SoC was built for config hash {smap.config_hash}, the bundle needs "
                             f"{config.name} (hash {config.hash}); build it with `npuforge bitstream --board ... "
                             f"-c <that config>` and program the board")
    return smap


def _nonzero_runs(image: np.ndarray, chunk: int):
    """(offset, bytes) of the chunks of ``image`` that are not all zero (BEGIN zeroed the rest)."""
    for start in range(0, image.size, chunk):
        part = image[start:start + chunk]
        if part.any():
            yield start, part.tobytes()


def run_on_board(bundle, client: HostLinkClient, *, run_timeout_s: float = 60.0, poll_s: float = 0.01,
                 retries: int = 1):
    """Run a loaded bundle on the SoC behind ``client``; the ``fpga`` fidelity's backend.

    Parameters
    ----------
    bundle : Bundle
    client : HostLinkClient
    run_timeout_s : float
        How long the NPU may run before the driver gives up.
    poll_s : float
        Pause between status polls.
    retries : int
        How many times to reload the whole session after a corrupted frame (BAD_CHECKSUM or a
        reply that failed its checksum) before giving up.

    Returns
    -------
    BackendResult
        The final DRAM image (the initial one with the output tensors read back), the cycle count
        and every counter (equal to the RTL co-simulation's).

    Raises
    ------
    ConfigMismatch, ProtocolError, LinkTimeout, BoardError
    ProgramStopped
        The NPU stopped with an error.
    """
    from ...run import BackendResult, ProgramStopped
    from ..counters import COUNTER_NAMES
    config = bundle.config
    smap = check_identity(client.regs(), config)
    words = list(bundle.image.words)
    if len(words) > smap.imem_words:
        raise BoardError(f"the program has {len(words)} instructions, the SoC's instruction memory "
                         f"{smap.imem_words}")
    image = np.asarray(bundle.dram, np.uint8)
    outputs = [t for t in bundle.tensors.values() if t.role == "output"]
    need = max([image.size] + [t.addr + t.nbytes for t in bundle.tensors.values()])
    if need > smap.dram_bytes:
        raise BoardError(f"the bundle uses DRAM up to byte {need}, the SoC has {smap.dram_bytes} bytes of on-chip "
                         f"DRAM")
    program = b"".join(w.to_bytes(WORD_BYTES, "little") for w in words)

    clock = client.transport
    t0 = clock.now()
    for attempt in range(retries + 1):
        try:
            client.begin()
            sent = client.write(Space.IMEM, 0, program)
            for offset, part in _nonzero_runs(image, CHUNK):
                sent += client.write(Space.DRAM, offset, part)
            client.start(config.hash, sent)
            break
        except ProtocolError as e:
            corrupted = e.status in (Status.BAD_CHECKSUM, None)
            if not corrupted or attempt == retries:
                raise
    load_s = clock.now() - t0

    t1 = clock.now()
    while True:
        st = client.status()
        if st["status"] >> STATUS_BITS["done"] & 1 and not st["status"] >> STATUS_BITS["busy"] & 1:
            break
        if clock.now() - t1 > run_timeout_s:
            raise LinkTimeout(f"the NPU did not finish within {run_timeout_s} s (status 0x{st['status']:02x})")
        if poll_s:
            clock.sleep(poll_s)
    run_s = clock.now() - t1
    regs = client.regs()
    counters = {name: regs[f"counter_{name}"] for name in COUNTER_NAMES}
    if regs["status"] >> STATUS_BITS["dram_overrun"] & 1:
        raise BoardError(f"the program addressed DRAM past the SoC's {smap.dram_bytes} bytes of on-chip DRAM; "
                         f"its results are not valid")
    error = ErrorCode(regs["error"])
    if error != ErrorCode.NONE:
        raise ProgramStopped(error.name, regs["error_pc"], None, f"the board's NPU stopped with {error.name}")
    dram = np.zeros(max(need, image.size), np.uint8)
    dram[:image.size] = image
    for t in outputs:
        dram[t.addr:t.addr + t.nbytes] = np.frombuffer(client.read(Space.DRAM, t.addr, t.nbytes), np.uint8)
    extra = {"board_load_s": round(load_s, 6), "board_run_s": round(run_s, 6), "board_clock_hz": smap.clock_hz,
             "board_baud": smap.baud, "board_dram_bytes": smap.dram_bytes}
    return BackendResult(dram, counters["cycles"], counters, extra)


DEFAULT_BAUD = 115200


def run_bundle_fpga(bundle, options: dict):
    """The ``fpga`` fidelity for :func:`npuforge.run.run_bundle`.

    Parameters
    ----------
    bundle : Bundle
    options : dict
        ``transport`` (a :class:`Transport`, e.g. the simulation's) or ``port`` (a serial port)
        with ``baud`` (default 115200); ``timeout_s`` (per reply), ``run_timeout_s``, ``retries``.

    Returns
    -------
    BackendResult

    Raises
    ------
    BoardError
        No transport and no port given, or any link or board failure.
    """
    transport = options.get("transport")
    opened = transport is None
    if opened:
        port = options.get("port")
        if not port:
            raise BoardError("fidelity 'fpga' needs a serial port: npuforge board run BUNDLE --port /dev/ttyUSB1")
        transport = SerialTransport(port, int(options.get("baud", DEFAULT_BAUD)))
    try:
        client = HostLinkClient(transport, timeout_s=float(options.get("timeout_s", 2.0)))
        kwargs = {k: options[k] for k in ("run_timeout_s", "poll_s", "retries") if k in options}
        return run_on_board(bundle, client, **kwargs)
    finally:
        if opened:
            transport.close()
