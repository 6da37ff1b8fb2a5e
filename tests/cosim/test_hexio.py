"""Memory image files: hex round trips and the binary layout that $fread expects."""

import numpy as np
import pytest

from npuforge.cosim.hexio import read_beats_hex, write_beats_bin, write_beats_hex, write_words_bin


@pytest.mark.parametrize("beat_bytes", [4, 16])
def test_hex_round_trip_of_a_sparse_image(tmp_path, beat_bytes):
    rng = np.random.default_rng(1)
    img = np.zeros(1 << 16, np.uint8)
    img[100:200] = rng.integers(1, 256, 100)
    img[40000:40010] = rng.integers(1, 256, 10)
    n = write_beats_hex(tmp_path / "m.hex", img, beat_bytes)
    text = (tmp_path / "m.hex").read_text().split()
    assert text[0] == f"@{100 // beat_bytes:x}" and sum(t.startswith("@") for t in text) == 2
    assert n == len(text) - 2
    # a dump of one contiguous range reads back byte-exactly
    dense = rng.integers(0, 256, 64 * beat_bytes, dtype=np.uint8)
    write_beats_hex(tmp_path / "d.hex", np.concatenate([np.ones(beat_bytes, np.uint8), dense]), beat_bytes)
    lines = (tmp_path / "d.hex").read_text().split()[1:]      # drop "@0"
    (tmp_path / "d2.hex").write_text("\n".join(lines[1:]) + "\n")
    start, beats = read_beats_hex(tmp_path / "d2.hex", beat_bytes, start=1)
    assert start == 1 and np.array_equal(beats.reshape(-1), dense)


def test_hex_rejects_partial_beats(tmp_path):
    with pytest.raises(ValueError, match="whole number"):
        write_beats_hex(tmp_path / "x.hex", np.zeros(10, np.uint8), 4)


def test_binary_image_layout(tmp_path):
    img = np.zeros(256, np.uint8)
    img[33] = 0xAB              # beat 2 (16-byte beats), byte 1
    img[70] = 0xCD              # beat 4, byte 6
    assert write_beats_bin(tmp_path / "m.bin", img, 16) == 3
    blob = (tmp_path / "m.bin").read_bytes()
    assert int.from_bytes(blob[:8], "big") == 2 and int.from_bytes(blob[8:16], "big") == 3
    body = np.frombuffer(blob[16:], np.uint8).reshape(-1, 16)
    # most significant byte first: byte j of a beat is at position 15 - j
    assert body[0, 14] == 0xAB and body[2, 9] == 0xCD and body.sum() == 0xAB + 0xCD
    write_words_bin(tmp_path / "p.bin", [1, 2 << 120])
    p = (tmp_path / "p.bin").read_bytes()
    assert p[:8] == bytes(8) and int.from_bytes(p[8:16], "big") == 2 and p[16 + 15] == 1 and p[16 + 16] == 2


def test_binary_image_of_zeros_is_empty(tmp_path):
    assert write_beats_bin(tmp_path / "z.bin", np.zeros(64, np.uint8), 16) == 0
    assert (tmp_path / "z.bin").read_bytes() == bytes(16)
