"""The instruction set, declared once.

Everything that knows an opcode number, a field position or a field width reads
it from here: the encoder and decoder (:mod:`npuforge.isa.encoding`), the
assembler and disassembler, the hardware decoder, the reference simulator and
the generated ``docs/isa.md``.

The instruction word is 128 bits. Its first ten bits are a :class:`Header`
(opcode and the four dependency-token flags); the rest is one of three formats,
chosen by the opcode: :class:`ScalarFmt` (control and address arithmetic,
executed by the dispatcher), :class:`DmaFmt` (load and store queues) and
:class:`ComputeFmt` (compute queue). Bits an opcode does not use are reserved
and must be zero; a word with a reserved bit set is an illegal instruction.
"""

from dataclasses import dataclass
from typing import Optional

from amaranth.hdl import signed
from amaranth.lib import data, enum

__all__ = [
    "ISA_VERSION", "WORD_BITS", "WORD_BYTES", "NUM_REGS", "Opcode", "Queue", "ErrorCode", "Dep",
    "Header", "MemRef", "DramRef", "QuantParams", "ScalarFmt", "DmaFmt", "ComputeFmt", "Instr",
    "Operand", "InstrSpec", "INSTRUCTIONS", "BY_OPCODE", "BY_MNEMONIC", "DEP_CHANNELS", "LEGAL_DEPS",
]

ISA_VERSION = 1
WORD_BITS = 128
WORD_BYTES = WORD_BITS // 8
NUM_REGS = 16           # r0..r15, 32 bits each; r0 always reads zero

MEM_OFF_BITS = 16       # scratchpad / accumulator row offsets
DRAM_OFF_BITS = 24      # DRAM byte offsets
ROWS_BITS = 16
LEN_BITS = 8
STRIDE_BITS = 24
SHIFT_BITS = 6


class Opcode(enum.Enum, shape=6):
    """Opcode numbers. 0 is never valid, so that zero-filled instruction memory traps."""
    NOP = 1
    HALT = 2
    FENCE = 3
    SETI = 4
    ADDI = 5
    DBNZ = 6
    LOAD_SP = 8
    LOAD_ACC8 = 9
    LOAD_ACC32 = 10
    PRELOAD = 16
    MATMUL = 17
    VADD = 18
    VMAX = 19
    VRELU = 20
    VQUANT = 21
    STORE_ACC32 = 24
    STORE_ACC8 = 25
    STORE_SP = 26


class Queue(enum.Enum, shape=2):
    """Which unit executes an instruction. SCALAR ones run in the dispatcher, in program order."""
    SCALAR = 0
    LOAD = 1
    COMPUTE = 2
    STORE = 3


class ErrorCode(enum.Enum, shape=4):
    """What the NPU reports when it stops on an illegal program (the hardware's error register)."""
    NONE = 0
    ILLEGAL_INSTR = 1   # unknown opcode, reserved bit set, or a dependency flag the queue does not have
    ADDR_RANGE = 2      # a DRAM, scratchpad or accumulator access outside the memory, or len too long
    DEADLOCK = 3        # every unit waits on a token (or queue space) that can never come
    PC_RANGE = 4        # fetch or branch target outside the instruction memory
    STEP_LIMIT = 5      # reference simulator only: no HALT within the step limit


class Dep(enum.Enum):
    """The four dependency-token channels (VTA's scheme): producer unit to consumer unit."""
    L2C = "load->compute"      # data is in the scratchpad / accumulator
    C2L = "compute->load"      # a scratchpad buffer is free again
    C2S = "compute->store"     # accumulator rows are ready to store
    S2C = "store->compute"     # accumulator rows are free again


DEP_CHANNELS = tuple(Dep)

# For each queue, what each header flag means: the channel it pops from or pushes to.
# A flag that a queue does not have (None) makes the instruction illegal.
LEGAL_DEPS: dict[Queue, dict[str, Optional[Dep]]] = {
    Queue.SCALAR: {"pop_prev": None, "pop_next": None, "push_prev": None, "push_next": None},
    Queue.LOAD: {"pop_prev": None, "pop_next": Dep.C2L, "push_prev": None, "push_next": Dep.L2C},
    Queue.COMPUTE: {"pop_prev": Dep.L2C, "pop_next": Dep.S2C, "push_prev": Dep.C2L, "push_next": Dep.C2S},
    Queue.STORE: {"pop_prev": Dep.C2S, "pop_next": None, "push_prev": Dep.S2C, "push_next": None},
}


# ---- the word -------------------------------------------------------------------------------

class Header(data.Struct):
    op: Opcode
    pop_prev: 1
    pop_next: 1
    push_prev: 1
    push_next: 1


class MemRef(data.Struct):
    """A scratchpad or accumulator row address: r[reg] + off."""
    reg: 4
    off: MEM_OFF_BITS


class DramRef(data.Struct):
    """A DRAM byte address: r[reg] + off."""
    reg: 4
    off: DRAM_OFF_BITS


class QuantParams(data.Struct):
    """Requantisation int32 -> int8: multiplier from register qreg, rounding right shift, zero point, ReLU."""
    qreg: 4
    shift: SHIFT_BITS
    zp: signed(8)
    relu: 1


class ScalarFmt(data.Struct):
    hdr: Header
    rd: 4
    rs: 4
    imm: signed(32)


class DmaFmt(data.Struct):
    hdr: Header
    mem: MemRef         # scratchpad or accumulator rows
    dram: DramRef       # DRAM byte address of the first row
    rows: ROWS_BITS     # number of rows
    len: LEN_BITS       # elements per row
    stride: STRIDE_BITS  # DRAM bytes from one row to the next
    q: QuantParams      # STORE_ACC8 only


class ComputeFmt(data.Struct):
    hdr: Header
    src: MemRef         # scratchpad rows (PRELOAD, MATMUL) or accumulator rows (vector ops)
    dst: MemRef         # accumulator rows
    rows: ROWS_BITS
    accumulate: 1       # MATMUL: add to the accumulator instead of overwriting
    q: QuantParams      # VQUANT only


class Instr(data.Union):
    """One 128-bit instruction word, viewed through each format."""
    hdr: Header
    scalar: ScalarFmt
    dma: DmaFmt
    compute: ComputeFmt
    raw: WORD_BITS


assert Instr.as_shape().size == WORD_BITS, Instr.as_shape().size
for _fmt in (ScalarFmt, DmaFmt, ComputeFmt):
    assert _fmt.as_shape().size <= WORD_BITS, _fmt


# ---- the semantic table ---------------------------------------------------------------------

@dataclass(frozen=True)
class Operand:
    """One assembler operand.

    ``kind`` is one of ``reg`` (``r0``..``r15``), ``mem`` and ``dram`` (``rN+offset``,
    ``rN`` or ``offset``), ``uint``, ``int``, ``flag`` (a bare word, present or not) or
    ``target`` (a label or an instruction index). ``path`` is the field inside the
    format, dotted. ``space`` says which memory a ``mem`` operand addresses:
    ``spad`` (scratchpad rows) or ``acc`` (accumulator rows).
    """
    name: str
    path: str
    kind: str
    doc: str
    required: bool = True
    space: str = ""


@dataclass(frozen=True)
class InstrSpec:
    """A row of the ISA table: everything the tools derive about one opcode."""
    op: Opcode
    mnemonic: str
    queue: Queue
    fmt: str                    # "scalar", "dma" or "compute": the Instr union member
    operands: tuple[Operand, ...]
    summary: str                # one line
    semantics: str              # exact meaning, as the reference simulator implements it
    latency: str                # latency class; formulas are in docs/timing.md
    positional: bool = False    # the disassembler writes operands without names
    elem_bytes: int = 0         # DMA instructions: DRAM bytes per element moved

    @property
    def fmt_layout(self):
        return {"scalar": ScalarFmt, "dma": DmaFmt, "compute": ComputeFmt}[self.fmt]


def _q_operands(doc_relu="apply ReLU before adding the zero point"):
    return (
        Operand("qreg", "q.qreg", "reg", "register holding the int32 multiplier"),
        Operand("shift", "q.shift", "uint", "rounding right shift, 0..63", required=False),
        Operand("zp", "q.zp", "int", "output zero point, -128..127", required=False),
        Operand("relu", "q.relu", "flag", doc_relu, required=False),
    )


_DMA_ROWS = (
    Operand("rows", "rows", "uint", "number of rows"),
    Operand("len", "len", "uint", "elements per row"),
    Operand("stride", "stride", "uint", "DRAM bytes between consecutive rows"),
)


_SPACE = {"sp": "spad", "acc": "acc"}


def _load(op, mnemonic, dest, elem, summary, elem_bytes):
    return InstrSpec(
        op, mnemonic, Queue.LOAD, "dma",
        (Operand(dest, "mem", "mem", f"first {dest} row", space=_SPACE[dest]),
         Operand("dram", "dram", "dram", "DRAM byte address of the first row")) + _DMA_ROWS,
        summary,
        f"for i in 0..rows-1: {dest}[{dest}+i] = row of len {elem} elements read from DRAM at "
        f"dram + i*stride, elements past len set to zero (len=0 zero-fills without reading DRAM)",
        "dma", elem_bytes=elem_bytes,
    )


def _store(op, mnemonic, src, what, summary, elem_bytes, extra=()):
    return InstrSpec(
        op, mnemonic, Queue.STORE, "dma",
        (Operand("dram", "dram", "dram", "DRAM byte address of the first row"),
         Operand(src, "mem", "mem", f"first {src} row", space=_SPACE[src])) + _DMA_ROWS + extra,
        summary,
        f"for i in 0..rows-1: DRAM[dram + i*stride ...] = {what} of the first len elements of {src}[{src}+i]",
        "dma", elem_bytes=elem_bytes,
    )


def _vector(op, mnemonic, summary, semantics, extra=()):
    return InstrSpec(
        op, mnemonic, Queue.COMPUTE, "compute",
        (Operand("dst", "dst", "mem", "first destination accumulator row", space="acc"),
         Operand("src", "src", "mem", "first source accumulator row", space="acc"),
         Operand("rows", "rows", "uint", "number of rows")) + extra,
        summary, semantics, "vector",
    )


INSTRUCTIONS: tuple[InstrSpec, ...] = (
    InstrSpec(Opcode.NOP, "nop", Queue.SCALAR, "scalar", (), "do nothing", "nothing", "scalar", True),
    InstrSpec(Opcode.HALT, "halt", Queue.SCALAR, "scalar", (), "stop after every queue has drained",
              "dispatch stops; the NPU is done when all queues are empty and all units idle", "scalar", True),
    InstrSpec(Opcode.FENCE, "fence", Queue.SCALAR, "scalar", (), "wait until every queue has drained",
              "dispatch waits until all queues are empty and all units idle", "scalar", True),
    InstrSpec(Opcode.SETI, "seti", Queue.SCALAR, "scalar",
              (Operand("rd", "rd", "reg", "destination register"),
               Operand("imm", "imm", "int", "32-bit value")),
              "set a register", "r[rd] = imm", "scalar", True),
    InstrSpec(Opcode.ADDI, "addi", Queue.SCALAR, "scalar",
              (Operand("rd", "rd", "reg", "destination register"),
               Operand("rs", "rs", "reg", "source register"),
               Operand("imm", "imm", "int", "32-bit value")),
              "add an immediate", "r[rd] = (r[rs] + imm) mod 2**32", "scalar", True),
    InstrSpec(Opcode.DBNZ, "dbnz", Queue.SCALAR, "scalar",
              (Operand("rd", "rd", "reg", "loop counter"),
               Operand("target", "imm", "target", "instruction index to branch to")),
              "decrement and branch if not zero",
              "r[rd] = (r[rd] - 1) mod 2**32; if r[rd] != 0: pc = target", "scalar", True),
    _load(Opcode.LOAD_SP, "load.sp", "sp", "int8", "DRAM -> scratchpad, 2D strided", 1),
    _load(Opcode.LOAD_ACC8, "load.acc8", "acc", "int8 (sign-extended to int32)",
          "DRAM int8 -> accumulator int32, 2D strided", 1),
    _load(Opcode.LOAD_ACC32, "load.acc32", "acc", "int32 (little-endian)", "DRAM int32 -> accumulator, 2D strided",
          4),
    InstrSpec(Opcode.PRELOAD, "preload", Queue.COMPUTE, "compute",
              (Operand("sp", "src", "mem", "first of `rows` (array rows) scratchpad rows", space="spad"),),
              "load a weight tile into the array",
              "for k in 0..ROWS-1, n in 0..COLS-1: W[k][n] = sp[sp+k][n]", "preload"),
    InstrSpec(Opcode.MATMUL, "matmul", Queue.COMPUTE, "compute",
              (Operand("acc", "dst", "mem", "first accumulator row written", space="acc"),
               Operand("sp", "src", "mem", "first activation row in the scratchpad", space="spad"),
               Operand("rows", "rows", "uint", "number of activation rows"),
               Operand("accumulate", "accumulate", "flag", "add to the accumulator rows", required=False)),
              "stream activation rows through the array",
              "for i in 0..rows-1: acc[acc+i] = (accumulate ? acc[acc+i] : 0) + sp[sp+i][0:ROWS] @ W "
              "(int8 x int8 products summed in int32, wrapping)", "matmul"),
    _vector(Opcode.VADD, "vadd", "add accumulator rows",
            "for i in 0..rows-1: acc[dst+i] = acc[dst+i] + acc[src+i] (int32, wrapping)"),
    _vector(Opcode.VMAX, "vmax", "element-wise maximum of accumulator rows",
            "for i in 0..rows-1: acc[dst+i] = max(acc[dst+i], acc[src+i])"),
    _vector(Opcode.VRELU, "vrelu", "ReLU of accumulator rows",
            "for i in 0..rows-1: acc[dst+i] = max(acc[src+i], 0)"),
    _vector(Opcode.VQUANT, "vquant", "requantize accumulator rows to the int8 range",
            "for i in 0..rows-1: acc[dst+i] = requant(acc[src+i]) (see Requantization)", _q_operands()),
    _store(Opcode.STORE_ACC32, "store.acc32", "acc", "int32 little-endian bytes", "accumulator int32 -> DRAM", 4),
    _store(Opcode.STORE_ACC8, "store.acc8", "acc", "requant() int8 bytes",
           "accumulator -> requantize (and ReLU) -> DRAM int8", 1, _q_operands()),
    _store(Opcode.STORE_SP, "store.sp", "sp", "the int8 bytes", "scratchpad int8 -> DRAM", 1),
)

BY_OPCODE: dict[Opcode, InstrSpec] = {s.op: s for s in INSTRUCTIONS}
BY_MNEMONIC: dict[str, InstrSpec] = {s.mnemonic: s for s in INSTRUCTIONS}
assert len(BY_OPCODE) == len(INSTRUCTIONS) == len(Opcode)
assert len(BY_MNEMONIC) == len(INSTRUCTIONS)

for _s in INSTRUCTIONS:
    assert (_s.elem_bytes > 0) == (_s.fmt == "dma"), _s.mnemonic
    assert all(bool(o.space) == (o.kind == "mem") for o in _s.operands), _s.mnemonic
