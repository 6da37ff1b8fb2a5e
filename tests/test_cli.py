"""The command line: each sub-command end to end through main(), exit codes and error lines."""

import json
from pathlib import Path

import pytest

from npuforge.cli import main


def test_config_show_and_validate(capsys):
    assert main(["config", "show", "4x4"]) == 0
    out = capsys.readouterr().out
    assert "rows: 4" in out and "spad_rows: 16384" in out and "# derived" in out
    assert main(["config", "validate", "configs/16x16.yaml"]) == 0


def test_config_error_exits_2_with_the_located_message(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("rows: 12\n")
    assert main(["config", "validate", str(bad)]) == 2
    assert capsys.readouterr().err.strip() == \
        f"npuforge: error: {bad}:1: rows: must be a power of two in 2..64, got 12"


def test_asm_disasm_round_trip(tmp_path, capsys):
    src = tmp_path / "p.s"
    src.write_text("seti r1, 2\nloop: load.sp sp=r1, dram=0x40, rows=4, len=4, stride=4\ndbnz r1, loop\nhalt\n")
    binary = tmp_path / "p.bin"
    assert main(["asm", str(src), "-c", "4x4", "-o", str(binary)]) == 0
    out_s = tmp_path / "back.s"
    assert main(["disasm", str(binary), "-o", str(out_s)]) == 0
    again = tmp_path / "again.bin"
    assert main(["asm", str(out_s), "-c", "4x4", "-o", str(again)]) == 0
    assert again.read_bytes() == binary.read_bytes()


def test_asm_error_prints_caret_and_writes_nothing(tmp_path, capsys):
    src = tmp_path / "p.s"
    src.write_text("halt\n  matmul acc=0, sp=0, rows=70000\n")
    out = tmp_path / "p.bin"
    assert main(["asm", str(src), "-c", "8x8", "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"{src}:2:") and "rows" in err and "^" in err
    assert not out.exists()


def test_kernel_and_run_reference(tmp_path, capsys):
    bundle = tmp_path / "mm"
    assert main(["kernel", "matmul", "--m", "9", "--k", "5", "--n", "7", "-c", "4x4", "-o", str(bundle)]) == 0
    assert main(["run", str(bundle), "--fidelity", "reference"]) == 0
    out = capsys.readouterr().out
    assert "PASS matmul" in out
    report = json.loads((bundle / "report.json").read_text())
    assert report["passed"] is True and report["fidelity"] == "reference" and report["macs"] == 9 * 5 * 7


def test_shape_option_of_another_kernel_is_refused(tmp_path, capsys):
    assert main(["kernel", "matmul", "--cin", "3", "-o", str(tmp_path / "x")]) == 2
    assert "--cin is not a shape parameter of matmul (it takes --m --k --n)" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_isa_doc_check(tmp_path, capsys):
    docs = Path(__file__).resolve().parents[1] / "docs"
    assert main(["isa-doc", "--check", "-o", str(docs / "isa.md")]) == 0
    assert main(["isa-doc", "--check", "-o", str(tmp_path / "isa.md")]) == 1
    assert "is stale" in capsys.readouterr().err


def test_unknown_kernel_is_an_argparse_error():
    with pytest.raises(SystemExit) as e:
        main(["kernel", "softmax"])
    assert e.value.code == 2


def test_run_cycle_prints_the_estimated_energy_and_refuses_waves_on_the_harness(tmp_path, capsys):
    bundle = tmp_path / "mm"
    assert main(["kernel", "matmul", "--m", "9", "--k", "5", "--n", "7", "-c", "4x4", "-o", str(bundle)]) == 0
    assert main(["run", str(bundle), "--fidelity", "cycle"]) == 0
    out = capsys.readouterr().out
    assert "PASS" in out and "[cycle]" in out and "(est.)" in out
    with pytest.raises(SystemExit, match="--waves needs --engine cocotb"):
        main(["run", str(bundle), "--fidelity", "rtl", "--engine", "harness", "--waves"])


@pytest.mark.rtl
def test_rtl_run_reports_energy_unless_told_not_to(tmp_path, capsys):
    bundle = tmp_path / "mm"
    assert main(["kernel", "matmul", "--m", "8", "--k", "8", "--n", "8", "-c", "4x4", "-o", str(bundle)]) == 0
    assert main(["run", str(bundle), "--fidelity", "rtl"]) == 0
    report = json.loads((bundle / "report.json").read_text())
    assert report["energy_pj"] > 0 and report["power_mw"] > 0 and "energy=" in capsys.readouterr().out
    assert main(["run", str(bundle), "--fidelity", "rtl", "--no-power"]) == 0
    report = json.loads((bundle / "report.json").read_text())
    assert "energy_pj" not in report and report["cycles"] > 0
