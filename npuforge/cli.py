"""The one command line: ``npuforge <sub-command>``; each sub-command is a thin layer over a library call."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

__all__ = ["main"]


class CliError(Exception):
    """An error to print as ``npuforge: error: ...`` with exit status 2."""


def _atomic_write(path: Path, data: bytes | str) -> None:
    """Write a file so that a failure never leaves a partial one behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# ---- config --------------------------------------------------------------------------------

def cmd_config(args) -> int:
    from .config import load_config
    cfg = load_config(args.config)
    if args.action == "validate":
        print(f"{args.config}: ok ({cfg.name}, hash {cfg.hash})")
        return 0
    import yaml
    print(f"# {args.config}: hash {cfg.hash}")
    print(yaml.safe_dump(cfg.to_dict(), sort_keys=False).rstrip())
    print("# derived")
    print(yaml.safe_dump(cfg.derived(), sort_keys=False).rstrip())
    return 0


# ---- assembler -------------------------------------------------------------------------------

def cmd_asm(args) -> int:
    from .assembler.asm import assemble_file
    from .config import load_config
    cfg = load_config(args.config)
    assembled = assemble_file(args.program, cfg)
    out = Path(args.output) if args.output else Path(args.program).with_suffix(".bin")
    _atomic_write(out, assembled.image.to_bytes())
    print(f"{out}: {len(assembled.words)} instructions for config {cfg.name} ({cfg.hash})")
    return 0


def cmd_disasm(args) -> int:
    from .assembler.disasm import disassemble_image
    from .isa.image import ProgramImage
    text = disassemble_image(ProgramImage.load(args.image))
    if args.output:
        _atomic_write(Path(args.output), text)
    else:
        sys.stdout.write(text)
    return 0


# ---- kernels and runs ------------------------------------------------------------------------

def _kernel_shape(args) -> dict:
    from .compiler.kernels import KERNELS
    kdef = KERNELS[args.kind]
    shape = dict(kdef.params)
    for name in _all_shape_params():
        value = getattr(args, f"shape_{name}")
        if value is None:
            continue
        if name not in kdef.params:
            raise CliError(f"--{name} is not a shape parameter of {args.kind} "
                           f"(it takes {' '.join('--' + p for p in kdef.params)})")
        shape[name] = value
    return shape


def _make_bundle(args) -> Path:
    from .compiler.bundle import make_bundle
    from .config import load_config
    cfg = load_config(args.config)
    shape = _kernel_shape(args)
    out = Path(args.output or f"build/bundles/{args.kind}-{cfg.name}")
    path = make_bundle(args.kind, shape, cfg, args.seed, out)
    dims = ", ".join(f"{k}={v}" for k, v in shape.items())
    print(f"{path}: {args.kind} ({dims}) for {cfg.name}, seed {args.seed}")
    return Path(path)


def cmd_kernel(args) -> int:
    _make_bundle(args)
    return 0


def _run(bundle: Path, fidelity: str, waves: bool, power: bool = True, engine: str = "cocotb") -> int:
    from .run import run_bundle, summary_line
    options = {"waves": True} if waves else {}
    if fidelity == "rtl":
        options["power"] = power
        if waves and engine != "cocotb":
            raise SystemExit("npuforge: --waves needs --engine cocotb (the C++ harness writes no waves)")
        options["engine"] = engine
    report = run_bundle(bundle, fidelity=fidelity, **options)
    print(summary_line(report))
    from .cosim.energy_plot import energy_lines
    for line in energy_lines(report):
        print(line)
    mismatch = report.get("mismatch")
    if mismatch:
        print(f"  first mismatch: tensor {mismatch['tensor']} index {tuple(mismatch['index'])}: "
              f"expected {mismatch['expected']}, got {mismatch['got']}")
        if fidelity == "rtl":
            print(f"  reproduce with waves: npuforge run {bundle} --fidelity rtl --waves")
    if report.get("error"):
        e = report["error"]
        where = f" (line {e['line']})" if e.get("line") else ""
        print(f"  stopped with {e['code']} at instruction {e['pc']}{where}: {e['message']}")
    if report.get("extra", {}).get("waves") or report.get("waves"):
        print(f"  waves: {report.get('waves') or report['extra']['waves']}")
    print(f"  report: {Path(bundle) / 'report.json'}")
    return 0 if report["passed"] else 1


def cmd_run(args) -> int:
    return _run(Path(args.bundle), args.fidelity, args.waves, args.power, args.engine)


def cmd_power(args) -> int:
    from .config import load_config
    from .cosim.power_bench import measure_counting_cost
    shape = {"m": args.m, "k": args.k, "n": args.n}
    print(f"matmul {args.m}x{args.k}x{args.n}, rtl: simulated cycles/s without and with toggle counting")
    print(f"{'config':8} {'cycles':>10} {'plain cyc/s':>12} {'counting cyc/s':>15} {'cost':>6}")
    for name in args.configs.split(","):
        r = measure_counting_cost(load_config(name), shape)
        print(f"{r['config']:8} {r['cycles']:>10,} {r['plain_cps']:>12,} {r['power_cps']:>15,} {r['cost']:>5.2f}x")
    return 0


def cmd_power_calibrate(args) -> int:
    from .cosim.calibrate import main_calibrate
    main_calibrate(args.config, args.out, cycles=args.cycles, seed=args.seed)
    return 0


def cmd_power_model_error(args) -> int:
    from .config import load_config
    from .cosim.energy_model_error import format_model_error, model_error
    worst = 0.0
    for name in args.configs.split(","):
        result = model_error(load_config(name), write=args.write, quiet=False)
        for line in format_model_error(result):
            print(line)
        if args.write:
            print(f"wrote {result['table']['path']}", file=sys.stderr)
        worst = max([worst] + [abs(c["error"]["total"]) for c in result["cases"]])
    return 0 if args.bound is None or worst <= args.bound else 1


def cmd_bench_cosim(args) -> int:
    import json
    from .config import load_config
    from .cosim.bench_cosim import bench_cosim, format_bench
    configs = [load_config(name) for name in args.configs.split(",")]
    result = bench_cosim(configs, {"m": args.m, "k": args.k, "n": args.n}, seed=args.seed, repeats=args.repeats,
                         progress=lambda line: print(f"[npuforge bench] {line}", file=sys.stderr, flush=True))
    print(format_bench(result))
    if args.json:
        _atomic_write(Path(args.json), json.dumps(result, indent=1) + "\n")
        print(f"wrote {args.json}")
    return 0


def cmd_report(args) -> int:
    from .cosim.energy_plot import plot_energy_report
    out = plot_energy_report(args.report, args.output)
    print(f"wrote {out}")
    return 0


def cmd_cosim(args) -> int:
    bundle = _make_bundle(args)
    return _run(bundle, args.fidelity, args.waves, args.power, args.engine)


# ---- docs and hardware -----------------------------------------------------------------------

def cmd_isa_doc(args) -> int:
    from .config import render_config_doc
    from .isa.doc import render_isa_doc
    docs = {Path(args.output): render_isa_doc(), Path(args.output).with_name("config.md"): render_config_doc()}
    if args.check:
        stale = [str(p) for p, text in docs.items() if not p.is_file() or p.read_text() != text]
        for p in stale:
            print(f"{p} is stale: run 'npuforge isa-doc'", file=sys.stderr)
        if not stale:
            print("generated docs are up to date")
        return 1 if stale else 0
    for path, text in docs.items():
        _atomic_write(path, text)
        print(f"wrote {path}")
    return 0


def cmd_hw(args) -> int:
    from .config import load_config
    from .hw.verilog import generate_verilog
    cfg = load_config(args.config)
    text = generate_verilog(cfg)
    _atomic_write(Path(args.output), text)
    print(f"{args.output}: Verilog of the {cfg.name} core ({cfg.hash}), {text.count(chr(10))} lines")
    return 0


# ---- FPGA ----------------------------------------------------------------------------------

def cmd_bitstream(args) -> int:
    from .config import load_config
    from .hw.soc.boards import get_board
    from .hw.soc.build import FitError, build_bitstream
    board = get_board(args.board)
    cfg = load_config(args.config or board.default_config)
    clock = int(args.clock_mhz * 1e6) if args.clock_mhz else None
    try:
        result = build_bitstream(board.name, cfg, args.output, baud=args.baud, dram_bytes=args.dram_bytes,
                                 clock_hz=clock, seed=args.seed, link_only=args.link_only,
                                 breakdown=args.breakdown, router=args.router, placer=args.placer,
                                 router_patience=args.router_patience or None, seed_tries=args.seed_tries)
    except FitError as e:
        print(f"npuforge: does not fit: {e}", file=sys.stderr)
        if not args.or_link_only or args.link_only:
            return 3
        print(f"the NPU core does not fit the {board.name}; building the link-only bring-up SoC instead "
              f"(UART, host link, on-chip DRAM; it cannot run bundles)", file=sys.stderr)
        out = f"{args.output.rstrip('/')}-link" if args.output else None
        result = build_bitstream(board.name, cfg, out, baud=args.baud, dram_bytes=args.dram_bytes, clock_hz=clock,
                                 seed=args.seed, link_only=True, router=args.router, placer=args.placer,
                                 router_patience=args.router_patience or None, seed_tries=args.seed_tries)
        print(f"NPU core: does not fit the {board.name}, see {Path(e.report['out_dir']) / 'report.md'}")
    r = result.report
    timing = "meets timing" if r["timing_met"] else "FAILS timing"
    print(f"{result.bitstream}: {cfg.name} ({r['variant']}) on {board.name}, Fmax {r['fmax_mhz']} MHz for "
          f"{r['clock_requested_mhz']:g} MHz requested ({timing}); report {result.out_dir / 'report.md'}")
    return 0


def cmd_board(args) -> int:
    from .run import summary_line
    if args.board_command == "info":
        from .hw.soc.host import HostLinkClient, SerialTransport
        transport = SerialTransport(args.port, args.baud)
        try:
            regs = HostLinkClient(transport, timeout_s=args.timeout).regs()
        finally:
            transport.close()
        for name, value in regs.items():
            print(f"{name}: {value:#x}" if name in ("magic", "config_hash", "status") else f"{name}: {value}")
        return 0
    if args.sim:
        from .cosim.soc_sim import run_bundle_soc_sim
        report = run_bundle_soc_sim(args.bundle)
    else:
        if not args.port:
            raise CliError("board run needs --port PORT (the board's serial port), or --sim for the simulated SoC")
        from .run import run_bundle
        report = run_bundle(args.bundle, fidelity="fpga", port=args.port, baud=args.baud, timeout_s=args.timeout)
    print(summary_line(report))
    if report.get("mismatch"):
        m = report["mismatch"]
        print(f"  first mismatch: tensor {m['tensor']} index {tuple(m['index'])}: expected {m['expected']}, "
              f"got {m['got']}")
    if report.get("error"):
        e = report["error"]
        print(f"  stopped with {e['code']} at instruction {e['pc']}: {e['message']}")
    print(f"  report: {Path(args.bundle) / 'report.json'}")
    return 0 if report["passed"] else 1


# ---- parser --------------------------------------------------------------------------------

def _all_shape_params() -> list[str]:
    try:
        from .compiler.kernels import KERNELS
    except ImportError:
        return []
    names: list[str] = []
    for kdef in KERNELS.values():
        names += [p for p in kdef.params if p not in names]
    return names


def _add_kernel_options(p: argparse.ArgumentParser, fidelity_default: str | None = None) -> None:
    try:
        from .compiler.kernels import KERNELS
        kinds = sorted(KERNELS)
        helptext = "; ".join(f"{k}: {' '.join('--' + n for n in KERNELS[k].params)}" for k in kinds)
    except ImportError:
        kinds, helptext = None, ""
    p.add_argument("kind", choices=kinds, help=f"kernel ({helptext})")
    p.add_argument("-c", "--config", default="configs/8x8.yaml", help="hardware config YAML or preset name")
    p.add_argument("-o", "--output", help="bundle folder (default build/bundles/KIND-CONFIG)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random input data")
    for name in _all_shape_params():
        p.add_argument(f"--{name}", dest=f"shape_{name}", type=int, metavar="N", help=argparse.SUPPRESS)
    if fidelity_default:
        _add_run_options(p, fidelity_default)


def _add_run_options(p: argparse.ArgumentParser, fidelity_default: str) -> None:
    """The options of running a bundle (``run``, ``cosim``)."""
    p.add_argument("--fidelity", default=fidelity_default, choices=["reference", "cycle", "rtl"])
    p.add_argument("--waves", action="store_true", help="write a waveform into the bundle (rtl)")
    p.add_argument("--power", action=argparse.BooleanOptionalAction, default=True,
                   help="rtl: count toggles and report energy and power (default; --no-power: timing only, "
                        "1.3-2x faster)")
    p.add_argument("--engine", default="cocotb", choices=["cocotb", "harness"],
                   help="rtl engine: cocotb + Verilator (waves), or the plain Verilator C++ harness "
                        "(same Verilog and report; faster, cheaper counting; docs/cosim.md)")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="npuforge", description="NPU co-design toolkit")
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("config", help="show or validate a hardware config")
    p.add_argument("action", choices=["show", "validate"])
    p.add_argument("config", help="config YAML or preset name (4x4, 8x8, 16x16)")
    p.set_defaults(func=cmd_config)

    p = sub.add_parser("asm", help="assemble a program")
    p.add_argument("program")
    p.add_argument("-c", "--config", default="configs/8x8.yaml")
    p.add_argument("-o", "--output", help="program image (default PROGRAM.bin)")
    p.set_defaults(func=cmd_asm)

    p = sub.add_parser("disasm", help="disassemble a program image")
    p.add_argument("image")
    p.add_argument("-o", "--output", help="write the assembly here instead of stdout")
    p.set_defaults(func=cmd_disasm)

    p = sub.add_parser("kernel", help="write a runnable bundle for a kernel")
    _add_kernel_options(p)
    p.set_defaults(func=cmd_kernel)

    p = sub.add_parser("run", help="run a bundle at a fidelity and check it bit-exactly")
    p.add_argument("bundle")
    _add_run_options(p, "reference")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("power", help="toggle counting and energy")
    pw = p.add_subparsers(dest="power_command", required=True, metavar="ACTION")
    b = pw.add_parser("bench", help="what toggle counting costs: one matmul on the plain and the probed RTL")
    b.add_argument("--configs", default="4x4,8x8", help="comma-separated configs")
    for dim in ("m", "k", "n"):
        b.add_argument(f"--{dim}", type=int, default=256)
    b.set_defaults(func=cmd_power)
    c = pw.add_parser("calibrate", help="fit the MAC-energy coefficients against a gate-level PE netlist "
                                        "(yosys + Verilator toggle coverage) over seeded workloads")
    c.add_argument("-c", "--config", default="4x4", help="config whose array shape sets the grid (capped at 8x8)")
    c.add_argument("--out", help="energy file to write (default configs/energy/calibration-CONFIG.yaml)")
    c.add_argument("--cycles", type=int, default=8000, help="cycles per workload")
    c.add_argument("--seed", type=int, default=2026, help="workload i uses seed + i")
    c.set_defaults(func=cmd_power_calibrate)
    e = pw.add_parser("model-error", help="the cycle model's energy estimate against the RTL's, per unit, "
                                          "on kernel cases (fits the cycle model's toggle table)")
    e.add_argument("--configs", default="4x4,8x8", help="comma-separated configs")
    e.add_argument("--write", action="store_true", help="write configs/energy/cycle-CONFIG.yaml")
    e.add_argument("--bound", type=float, help="exit 1 when a case's total error exceeds this (e.g. 0.1)")
    e.set_defaults(func=cmd_power_model_error)

    p = sub.add_parser("bench", help="benchmarks")
    bn = p.add_subparsers(dest="bench_command", required=True, metavar="ACTION")
    b = bn.add_parser("cosim", help="RTL speed: the C++ harness and the cocotb flow, with and without toggle "
                                    "counting, against the targets; builds, peak memory, cycle model")
    b.add_argument("--configs", default="4x4,8x8,16x16", help="comma-separated configs")
    for dim in ("m", "k", "n"):
        b.add_argument(f"--{dim}", type=int, default=256)
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--repeats", type=int, default=3, help="jobs per simulator process (the best rate counts)")
    b.add_argument("--json", metavar="PATH", help="also write the table as JSON")
    b.set_defaults(func=cmd_bench_cosim)

    p = sub.add_parser("report", help="work with a run's report.json")
    rp = p.add_subparsers(dest="report_command", required=True, metavar="ACTION")
    r = rp.add_parser("plot", help="draw the per-unit energy breakdown as a PNG")
    r.add_argument("report", help="report.json of a run with --power")
    r.add_argument("-o", "--output", required=True, help="PNG to write")
    r.set_defaults(func=cmd_report)

    p = sub.add_parser("cosim", help="make a kernel bundle and run it on the RTL (kernel + run --fidelity rtl)")
    _add_kernel_options(p, fidelity_default="rtl")
    p.set_defaults(func=cmd_cosim)

    p = sub.add_parser("isa-doc", help="regenerate docs/isa.md (and docs/config.md beside it) from the declarations")
    p.add_argument("-o", "--output", default="docs/isa.md")
    p.add_argument("--check", action="store_true", help="only check that the file is up to date")
    p.set_defaults(func=cmd_isa_doc)

    p = sub.add_parser("hw", help="hardware generation")
    hw = p.add_subparsers(dest="hw_command", required=True, metavar="ACTION")
    v = hw.add_parser("verilog", help="emit the core's Verilog")
    v.add_argument("-c", "--config", default="configs/8x8.yaml")
    v.add_argument("-o", "--output", required=True)
    v.set_defaults(func=cmd_hw)

    p = sub.add_parser("bitstream", help="build an FPGA bitstream of the SoC with the open flow (YoWASP)")
    p.add_argument("--board", required=True, help="icebreaker or ulx3s")
    p.add_argument("-c", "--config", help="hardware config YAML (default: the board's design point)")
    p.add_argument("-o", "--output", help="build folder (default build/fpga/BOARD-CONFIG-HASH)")
    p.add_argument("--baud", type=int, default=115200, help="UART baud rate")
    p.add_argument("--dram-bytes", type=int, help="on-chip DRAM bytes (default: the board's)")
    p.add_argument("--clock-mhz", type=float, help="core clock (boards with a PLL; default: the config's clock_mhz)")
    p.add_argument("--seed", type=int, help="nextpnr's first placement seed (default: the board's; the ULX3S "
                                            "asks for 3)")
    p.add_argument("--router", choices=("router1", "router2"),
                   help="nextpnr's router (default: the board's; the ULX3S asks for router2)")
    p.add_argument("--placer", choices=("heap", "static", "sa"),
                   help="nextpnr's placer (default: the board's; the ULX3S asks for static)")
    p.add_argument("--router-patience", type=int, default=20, metavar="N",
                   help="stop when router2 has gone N iterations without fewer overused wires (0: never)")
    p.add_argument("--seed-tries", type=int, default=3, metavar="K",
                   help="when router2 stops converging, place and route again with the next seed, K seeds in all")
    p.add_argument("--link-only", action="store_true",
                   help="the bring-up SoC without the NPU core (UART, host link, on-chip DRAM)")
    p.add_argument("--or-link-only", action="store_true",
                   help="when the NPU does not fit, build the link-only bring-up SoC instead (exit 0)")
    p.add_argument("--breakdown", action="store_true",
                   help="synthesise each block on its own to show where the resources go (and, on the "
                        "ECP5, place and route it alone: which blocks limit Fmax)")
    p.set_defaults(func=cmd_bitstream)

    p = sub.add_parser("board", help="run bundles on an FPGA board through the host link")
    bd = p.add_subparsers(dest="board_command", required=True, metavar="ACTION")
    r = bd.add_parser("run", help="run a bundle on the board (fidelity fpga) and check it bit-exactly")
    r.add_argument("bundle")
    r.add_argument("--port", help="serial port, e.g. /dev/ttyUSB1")
    r.add_argument("--baud", type=int, default=115200)
    r.add_argument("--timeout", type=float, default=2.0, help="seconds to wait for each reply")
    r.add_argument("--sim", action="store_true", help="run on the simulated SoC (Verilator) instead of a board")
    r.set_defaults(func=cmd_board)
    i = bd.add_parser("info", help="print the board SoC's identity and status registers")
    i.add_argument("--port", required=True)
    i.add_argument("--baud", type=int, default=115200)
    i.add_argument("--timeout", type=float, default=2.0)
    i.set_defaults(func=cmd_board)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:          # output piped into `head` and closed early: not an error
        sys.stderr.close()
        return 0
    except Exception as e:  # noqa: BLE001 - every library error becomes one clear line
        if os.environ.get("NPUFORGE_DEBUG"):
            raise
        known = _known_errors()
        if isinstance(e, known):
            text = str(e)
            # Assembler errors already read "file:line:col: error: ..." with the source line and a caret.
            print(text if ": error: " in text.split("\n", 1)[0] else f"npuforge: error: {text}", file=sys.stderr)
            return 2
        raise


def _known_errors() -> tuple[type, ...]:
    errors: list[type] = [CliError, ValueError, FileNotFoundError, NotImplementedError]
    for module, name in (("npuforge.assembler.asm", "AsmError"), ("npuforge.isa.refsim", "SimError"),
                         ("npuforge.hw.soc.host", "BoardError"), ("npuforge.hw.soc.build", "FlowError"),
                         ("npuforge.cosim.soc_sim", "SocSimError"), ("npuforge.cosim.runner", "RtlError")):
        try:
            errors.append(getattr(__import__(module, fromlist=[name]), name))
        except (ImportError, AttributeError):
            pass
    return tuple(errors)


if __name__ == "__main__":
    sys.exit(main())
