"""Verilog post-processing and the test bench text (no Verilator needed)."""

from amaranth.back import verilog
from amaranth.hdl import Module
from amaranth.lib import memory, wiring
from amaranth.lib.wiring import In, Out

from npuforge.config import load_config
from npuforge.cosim.build import postprocess_verilog, repo_build_dir, bench_verilog


class _Leaf(wiring.Component):
    addr: In(4)
    data: Out(8)

    def __init__(self, init):
        self.init = init
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        m.submodules.mem = mem = memory.Memory(shape=8, depth=16, init=self.init)
        rp = mem.read_port()
        m.d.comb += [rp.addr.eq(self.addr), self.data.eq(rp.data)]
        return m


class _Top(wiring.Component):
    addr: In(4)
    a: Out(8)
    b: Out(8)

    def elaborate(self, platform):
        m = Module()
        m.submodules.buf = z = _Leaf([])      # a Verilog keyword as an instance name
        m.submodules.rom = r = _Leaf([1, 2, 3])
        m.d.comb += [z.addr.eq(self.addr), r.addr.eq(self.addr), self.a.eq(z.data), self.b.eq(r.data)]
        return m


def test_zero_init_blocks_are_stripped_and_listed():
    text = verilog.convert(_Top(), name="tt", emit_src=False)
    assert text.count("mem[15] = 8'h00;") == 2      # both memories have a per-word init block
    out, mems = postprocess_verilog(text, "tt")
    # the all-zero memory loses its block and is listed for clearing; the ROM keeps its contents
    assert mems == [("\\buf .mem", 16)]
    assert "mem[1] = 8'h02;" in out
    assert out.count("initial begin") == text.count("initial begin") - 1


def test_testbench_exposes_only_the_top_ports():
    from npuforge.cosim.simtop import SimTop
    top = SimTop(load_config("4x4"))
    tb = bench_verilog(top, [("core.x.mem", 8)])
    assert "always #1 clk = ~clk;" in tb
    assert "simtop.core.x.mem[npuforge_i] = 0;" in tb and "npuforge_i < 8;" in tb
    for port in ("load", "go", "dump", "finished", "error", "error_pc", "counters"):
        assert f"{port} /*verilator public_flat_rw*/" in tb
    # the component was only inspected, never elaborated
    top._MustUse__silence = True


def test_build_folder_is_under_the_checkout_build_dir():
    assert repo_build_dir().name == "build"
    assert (repo_build_dir().parent / "cosim").is_dir()


def test_prune_keeps_the_newest_builds_of_one_kind(tmp_path):
    import os
    from npuforge.cosim.build import _prune
    names = [f"{'a' * 16}-{i:012x}" for i in range(4)] + [f"{'a' * 16}-{9:012x}-waves", f"{'b' * 16}-{0:012x}",
                                                          f"{'a' * 16}-{7:012x}-power"]
    for t, n in enumerate(names):
        (tmp_path / n).mkdir()
        os.utime(tmp_path / n, (1000 + t, 1000 + t))
    _prune(tmp_path, "a" * 16, "", keep=tmp_path / names[0])
    left = sorted(p.name for p in tmp_path.iterdir())
    # the kept build, the newest other one, and every other config or kind untouched
    assert left == sorted([names[0], names[3], names[4], names[5], names[6]])
