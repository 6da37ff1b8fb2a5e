"""Program images: header round trip and the refusals, with their exact messages."""

import pytest

from npuforge.config import load_config
from npuforge.isa.image import HEADER_BYTES, ImageError, ProgramImage


@pytest.fixture
def image():
    return ProgramImage((1, 2 << 100, (1 << 128) - 1), load_config("8x8").hash)


def test_round_trip(image):
    blob = image.to_bytes()
    assert len(blob) == HEADER_BYTES + 3 * 16 and blob[:4] == b"NPUF"
    assert ProgramImage.from_bytes(blob) == image


def test_image_for_another_config_is_refused(image):
    other = load_config("4x4")
    with pytest.raises(ImageError) as e:
        image.check_config(other, "prog.bin")
    assert str(e.value) == (f"prog.bin: image was made for config hash {image.config_hash}, but config '4x4' "
                            f"has hash {other.hash}; reassemble it for this config")
    image.check_config(load_config("8x8"))


def test_image_too_large_for_imem():
    cfg = load_config("4x4").replace(imem_words=16)
    with pytest.raises(ImageError, match="17 instructions do not fit the instruction memory of 16 words"):
        ProgramImage((2,) * 17, cfg.hash).check_config(cfg)


@pytest.mark.parametrize("mutate, message", [
    (lambda b: b[:10], "10 bytes is too short for a program image header (32 bytes)"),
    (lambda b: b"XXXX" + b[4:], "not a program image (magic b'XXXX', expected b'NPUF')"),
    (lambda b: b[:4] + b"\x07\x00" + b[6:], "ISA version 7, this toolkit implements version 1"),
    (lambda b: b[:-1], "header says 3 words (80 bytes), file has 79 bytes"),
])
def test_malformed_images(image, mutate, message):
    with pytest.raises(ImageError) as e:
        ProgramImage.from_bytes(mutate(image.to_bytes()), "p.bin")
    assert str(e.value) == f"p.bin: {message}"
