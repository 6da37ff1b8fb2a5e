"""The typed hardware config: presets, derived values, hashing and the exact error messages."""

import dataclasses

import pytest

from npuforge.config import PRESETS, ConfigError, HwConfig, load_config


@pytest.mark.parametrize("name", PRESETS)
def test_presets_load_and_are_square(name):
    cfg = load_config(name)
    n = int(name.split("x")[0])
    assert (cfg.rows, cfg.cols, cfg.name) == (n, n, name)
    assert cfg.dataflow == "weight_stationary"
    assert cfg.spad_rows * cfg.spad_row_bytes == cfg.spad_kib * 1024
    assert cfg.acc_rows * cfg.acc_row_bytes == cfg.acc_kib * 1024


def test_preset_file_and_name_give_the_same_config():
    assert load_config("configs/8x8.yaml") == load_config("8x8") == load_config(None)


def test_derived_values_of_a_non_square_array():
    cfg = HwConfig(rows=4, cols=16, spad_kib=16, acc_kib=16)
    assert cfg.spad_row_bytes == 16 and cfg.spad_rows == 1024 and cfg.spad_addr_bits == 10
    assert cfg.acc_row_bytes == 64 and cfg.acc_rows == 256 and cfg.acc_addr_bits == 8
    assert cfg.pes == 64 and cfg.dram_addr_bits == 24


def test_hash_is_stable_and_sensitive():
    a, b = load_config("8x8"), load_config("8x8")
    assert a.hash == b.hash and len(a.hash) == 16
    assert a.replace(dram_latency=33).hash != a.hash
    # The name is not part of the design point.
    assert HwConfig().hash == HwConfig(name="custom").hash
    # Pinned: the hash keys caches, program images and energy tables, so a silent change would orphan them.
    assert a.hash == "c142cc2124fd4c17"
    # A field added later (vector_stages, dispatch_stages) counts only away from its default: old hashes stay valid.
    assert a.replace(vector_stages=1).hash == a.hash and a.replace(vector_stages=2).hash != a.hash
    assert a.replace(dispatch_stages=1).hash == a.hash and a.replace(dispatch_stages=2).hash != a.hash
    assert a.replace(dispatch_stages=2).hash != a.replace(vector_stages=2).hash


def test_config_is_immutable():
    cfg = load_config("4x4")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.rows = 8


def _write(tmp_path, text):
    p = tmp_path / "x.yaml"
    p.write_text(text)
    return p


def test_bad_value_names_file_line_field_and_range(tmp_path):
    p = _write(tmp_path, "name: t\ncols: 8\n# comment\n\n\n\nrows: 12\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert str(e.value) == f"{p}:7: rows: must be a power of two in 2..64, got 12"


def test_unknown_key_is_an_error(tmp_path):
    p = _write(tmp_path, "rows: 8\nrowz: 8\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert str(e.value).startswith(f"{p}:2: rowz: unknown field; allowed fields: name, rows, cols,")


@pytest.mark.parametrize("text, message", [
    ("dataflow: diagonal\n", "1: dataflow: must be one of 'weight_stationary', 'output_stationary', got 'diagonal'"),
    ("input_bits: 16\n", "1: input_bits: must be one of 8, got 16"),
    ("dram_latency: 0\n", "1: dram_latency: must be an integer in 1..1024, got 0"),
    ("clock_mhz: -5\n", "1: clock_mhz: must be a number of MHz in (0, 10000], got -5"),
    ("rows: true\n", "1: rows: must be a power of two in 2..64, got True"),
    ("name: t\nrows: 8\nrows: 4\n", "3: rows: given twice"),
    ("spad_kib: 1\nrows: 64\n", "1: spad_kib: gives 16 rows, fewer than one 64x8 tile needs, got 1"),
    ("spad_kib: 4096\nrows: 2\ncols: 2\n", "1: spad_kib: gives 2097152 rows, more than the ISA's 65536-row "
                                           "address space, got 4096"),
])
def test_error_messages(tmp_path, text, message):
    p = _write(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert str(e.value) == f"{p}:{message}"


def test_yaml_syntax_error_and_non_mapping(tmp_path):
    with pytest.raises(ConfigError, match=r"x.yaml:2: YAML syntax error"):
        load_config(_write(tmp_path, "rows: 8\n  cols: [4\n"))
    with pytest.raises(ConfigError, match=r"x.yaml:1: expected a mapping of config fields"):
        load_config(_write(tmp_path, "- 1\n- 2\n"))


def test_missing_file_and_unknown_preset():
    with pytest.raises(FileNotFoundError, match="no such config file, and not a preset"):
        load_config("nonexistent.yaml")
