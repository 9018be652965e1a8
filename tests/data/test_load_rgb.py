"""load_rgb: every image mode either converted to the right uint8 RGB or rejected by name."""

import numpy as np
import pytest
from PIL import Image

from detkit.data.base import UnreadableImageError, load_rgb


def _gray_ramp(height: int = 6, width: int = 8) -> np.ndarray:
    return np.arange(height * width, dtype=np.int64).reshape(height, width)


def test_16_bit_png_is_scaled_not_clipped_to_white(tmp_path):
    values = (_gray_ramp() * 1300).astype(np.uint16)  # 0 .. 61100
    values[0, 0], values[0, 1] = 65535, 257
    Image.fromarray(values).save(tmp_path / "deep.png")
    with Image.open(tmp_path / "deep.png") as image:
        assert image.mode == "I;16"  # what Pillow decodes a 16-bit grayscale PNG to
    rgb = load_rgb(tmp_path / "deep.png")
    assert rgb.dtype == np.uint8 and rgb.shape == (6, 8, 3)
    expected = np.round(values / 257).astype(np.uint8)
    assert np.array_equal(rgb[..., 0], expected) and np.array_equal(rgb[..., 2], expected)
    assert rgb[0, 0, 0] == 255 and rgb[0, 1, 0] == 1 and rgb[1, 0, 0] == 40  # 10400 / 257
    assert len(np.unique(rgb)) > 20  # a ramp, not a solid image


def test_32_bit_integer_image_in_16_bit_range_is_scaled_beyond_it_rejected(tmp_path):
    values = (_gray_ramp() * 1000).astype(np.int32)
    Image.fromarray(values, mode="I").save(tmp_path / "int.tif")
    rgb = load_rgb(tmp_path / "int.tif")
    assert np.array_equal(rgb[..., 1], np.round(values / 257).astype(np.uint8))
    Image.fromarray(values * 100, mode="I").save(tmp_path / "wide.tif")
    with pytest.raises(UnreadableImageError, match=r"wide\.tif.*'I'.*0\.\.4700000"):
        load_rgb(tmp_path / "wide.tif")


def test_float_image_is_rejected_naming_path_and_mode(tmp_path):
    Image.fromarray(np.full((4, 5), 0.5, np.float32), mode="F").save(tmp_path / "float.tif")
    with pytest.raises(UnreadableImageError, match=r"float\.tif has mode 'F'"):
        load_rgb(tmp_path / "float.tif")


def test_alpha_and_palette_transparency_are_composited_on_white(tmp_path):
    la = np.zeros((2, 3, 2), np.uint8)
    la[..., 0] = 40
    la[0, :, 1] = 255  # opaque row
    la[1, 0, 1], la[1, 1, 1] = 0, 128  # transparent, half
    Image.fromarray(la, mode="LA").save(tmp_path / "la.png")
    rgb = load_rgb(tmp_path / "la.png")
    assert rgb[0, 0].tolist() == [40, 40, 40]
    assert rgb[1, 0].tolist() == [255, 255, 255]
    half = round(40 * 128 / 255 + 255 * (1 - 128 / 255))
    assert rgb[1, 1].tolist() == [half] * 3

    palette = Image.new("P", (3, 2))
    palette.putpalette([0, 0, 0, 200, 10, 10] + [0] * 762)
    palette.putpixel((1, 0), 1)
    palette.info["transparency"] = 0  # index 0 (black) is transparent
    palette.save(tmp_path / "p.png", transparency=0)
    rgb = load_rgb(tmp_path / "p.png")
    assert rgb[0, 1].tolist() == [200, 10, 10] and rgb[0, 0].tolist() == [255, 255, 255]


@pytest.mark.parametrize("mode", ["1", "L", "CMYK", "RGB"])
def test_plain_modes_convert_as_pillow_does(tmp_path, mode):
    pixels = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    image = Image.fromarray(pixels).convert(mode)
    path = tmp_path / ("img.tif" if mode == "CMYK" else "img.png")
    image.save(path)
    rgb = load_rgb(path)
    assert rgb.shape == (5, 7, 3) and rgb.dtype == np.uint8
    assert np.array_equal(rgb, np.asarray(image.convert("RGB")))
    if mode == "1":
        assert set(np.unique(rgb)) <= {0, 255}


def test_size_check_and_undecodable_file_name_the_path(tmp_path):
    Image.fromarray(np.zeros((4, 6, 3), np.uint8)).save(tmp_path / "a.png")
    assert load_rgb(str(tmp_path / "a.png"), (4, 6)).shape == (4, 6, 3)
    with pytest.raises(UnreadableImageError, match=r"a\.png is 4x6 .* says 6x4"):
        load_rgb(tmp_path / "a.png", (6, 4))
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    with pytest.raises(UnreadableImageError, match=r"cannot decode image .*bad\.jpg"):
        load_rgb(tmp_path / "bad.jpg")
