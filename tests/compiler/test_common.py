"""The emitter's loops and registers, run on the reference simulator."""

import numpy as np
import pytest

from npuforge.compiler.kernels.common import DramLayout, Emitter, KernelError
from npuforge.config import load_config
from npuforge.isa import refsim

CFG = load_config("8x8")


def _run(em):
    em.emit("halt")
    return refsim.run(em.b.image(), b"", CFG)


@pytest.mark.parametrize("variants", [[0] * 5, [0, 1, 1, 1, 2], [0, 1, 0, 1], [7], [], [1, 1, 2, 2, 2, 3]])
def test_for_range_runs_every_iteration_with_its_variant_and_restores_registers(variants):
    em = Emitter(CFG)
    r_addr, r_log = em.reg(), em.reg()
    em.set(r_addr, 1000)
    em.set(r_log, 0)
    seen = []

    def body(v):
        seen.append(v)
        # r_log adds v * 100000 per iteration: the sum proves each iteration ran its variant's body.
        em.emit("addi", rd=r_log, rs=r_log, imm=v * 100000)
        em.emit("addi", rd=r_log, rs=r_log, imm=0)

    em.for_range(len(variants), lambda i: variants[i], body, advances=[(r_addr, 7)])
    r = _run(em)
    assert r.regs[r_addr] == 1000, "registers are restored after the range"
    assert r.regs[r_log] == sum(variants) * 100000
    runs = sum(1 for i, v in enumerate(variants) if i == 0 or variants[i - 1] != v)
    assert len(seen) == runs, "one body per run of equal variants"


def test_for_range_advances_addresses():
    """Each iteration stores a row from a different address: the data lands where it should."""
    em = Emitter(CFG)
    r_src, r_dst = em.reg(), em.reg()
    em.set(r_src, 0)
    em.set(r_dst, 4096)
    em.emit("load.acc8", acc=0, dram=0, rows=6, len=8, stride=8, deps=["push_next"])
    em.emit("vrelu", dst=0, src=0, rows=0, deps=["pop_prev", "push_next"])
    em.emit("store.acc32", dram=0, acc=0, rows=0, len=0, stride=0, deps=["pop_prev"])

    def body(v):
        em.emit("store.acc8", dram=(r_dst, 0), acc=(r_src, 0), rows=1, len=8, stride=8, qreg=r_one)

    r_one = em.reg()
    em.set(r_one, 1)
    variants = [0, 0, 1, 2, 2, 2]
    em.for_range(6, lambda i: variants[i], body, advances=[(r_src, 1), (r_dst, 16)])
    data = np.arange(48, dtype=np.int8)
    em.emit("halt")
    r = refsim.run(em.b.image(), data.tobytes(), CFG)
    for i in range(6):
        assert r.dram[4096 + 16 * i:4096 + 16 * i + 8].tolist() == list(range(8 * i, 8 * i + 8))


def test_registers_run_out_with_a_clear_error():
    em = Emitter(CFG)
    for _ in range(15):
        em.reg()
    with pytest.raises(KernelError, match="out of scalar registers"):
        em.reg()


def test_layout_refuses_a_tensor_past_dram():
    lay = DramLayout(CFG)
    lay.add("A", (16,), "int8", "input")
    with pytest.raises(KernelError, match=r"tensor 'B' \[16777216\] int8 ends at byte .*dram_bytes=16777216"):
        lay.add("B", (CFG.dram_bytes,), "int8", "input")
    assert lay.tensors["A"].addr == 0
    assert lay.image({"A": np.arange(16, dtype=np.int8)}).tolist() == list(range(16))
