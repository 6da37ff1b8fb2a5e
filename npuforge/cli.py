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


def _run(bundle: Path, fidelity: str, waves: bool) -> int:
    from .run import run_bundle, summary_line
    options = {"waves": True} if waves else {}
    report = run_bundle(bundle, fidelity=fidelity, **options)
    print(summary_line(report))
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
    return _run(Path(args.bundle), args.fidelity, args.waves)


def cmd_cosim(args) -> int:
    bundle = _make_bundle(args)
    return _run(bundle, args.fidelity, args.waves)


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
        p.add_argument("--fidelity", default=fidelity_default, choices=["reference", "cycle", "rtl"])
        p.add_argument("--waves", action="store_true", help="write a waveform into the bundle (rtl)")


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
    p.add_argument("--fidelity", default="reference", choices=["reference", "cycle", "rtl"])
    p.add_argument("--waves", action="store_true", help="write a waveform into the bundle (rtl)")
    p.set_defaults(func=cmd_run)

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
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return 130
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
    for module, name in (("npuforge.assembler.asm", "AsmError"), ("npuforge.isa.refsim", "SimError")):
        try:
            errors.append(getattr(__import__(module, fromlist=[name]), name))
        except (ImportError, AttributeError):
            pass
    return tuple(errors)


if __name__ == "__main__":
    sys.exit(main())
