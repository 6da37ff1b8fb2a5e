"""The cocotb test bench of the simulated SoC: runs host-driver calls against its UART pins.

Started by :func:`npuforge.cosim.soc_sim.run_soc_sim` with ``+NPUFORGE_SOC_JOBS=<jobs.json>``.
The manifest lists calls ``{"func": "package.module:function", "kwargs": {...}}``; each
function is called as ``function(transport, **kwargs)`` in a thread bridged into the
simulation (``cocotb.bridge``), with a fresh :class:`~npuforge.cosim.soc_transport.SimTransport`
on the same running SoC (state carries over from call to call, as on a board). Its return
value (JSON-able), or the exception's type and message, goes to ``results.json``.
"""

from __future__ import annotations

import importlib
import json
import traceback

import cocotb
from cocotb.triggers import Timer

from .soc_transport import SimTransport, UartPins, bridge


def _resolve(path: str):
    module, name = path.split(":")
    return getattr(importlib.import_module(module), name)


@cocotb.test()
async def run_calls(dut):
    """Reset the SoC, then run every call of the manifest and write results.json."""
    with open(cocotb.plusargs["NPUFORGE_SOC_JOBS"]) as f:
        manifest = json.load(f)
    period = manifest["period_ns"]
    pins = UartPins(dut, manifest["divisor"] * period)
    dut.rst.value = 1
    await Timer(4 * period, "ns")
    dut.rst.value = 0
    await Timer(4 * period, "ns")
    cocotb.start_soon(pins.monitor())
    results = []
    for call in manifest["calls"]:
        transport = SimTransport(pins, manifest["clock_hz"], period)
        func = _resolve(call["func"])
        try:
            value = await bridge(func)(transport, **call.get("kwargs", {}))
            results.append({"ok": True, "value": value})
        except Exception as e:      # noqa: BLE001 - every failure is reported to the caller, not raised here
            results.append({"ok": False, "error_type": type(e).__name__, "message": str(e),
                            "traceback": traceback.format_exc()})
        results[-1]["framing_errors"] = pins.framing_errors
    with open("results.json", "w") as f:
        json.dump(results, f, default=str)
