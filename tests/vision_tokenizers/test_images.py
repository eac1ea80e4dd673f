import io

import numpy as np
import pytest
from PIL import Image

from mmllm.errors import ImageError
from mmllm.vision_tokenizers import load_image, to_pixels


def png_bytes(image: Image.Image, **kwargs) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG", **kwargs)
    return buf.getvalue()


def test_truncated_png_is_refused():
    data = png_bytes(Image.effect_noise((64, 64), 50).convert("RGB"))
    with pytest.raises(ImageError, match="truncated or corrupt"):
        load_image(data[: len(data) // 2])


def test_non_image_bytes_are_refused():
    with pytest.raises(ImageError, match="not a readable image"):
        load_image(b"definitely not an image")


def test_missing_file(tmp_path):
    with pytest.raises(ImageError, match="no such image file"):
        load_image(tmp_path / "nope.png")


def test_zero_size_image():
    with pytest.raises(ImageError, match="zero size"):
        load_image(Image.new("RGB", (0, 5)))


def test_huge_image_is_refused_before_decoding():
    data = png_bytes(Image.new("1", (9000, 9000)))  # compresses to a few KB
    with pytest.raises(ImageError, match="more than the"):
        load_image(data)
    assert load_image(data, max_pixels=10**8).size == (9000, 9000)


def test_alpha_is_composited_on_white():
    rgba = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    rgba.putpixel((0, 0), (0, 0, 255, 255))
    out = np.asarray(load_image(png_bytes(rgba)))
    assert out.shape == (4, 4, 3)
    assert tuple(out[0, 0]) == (0, 0, 255) and tuple(out[1, 1]) == (255, 255, 255)


def test_palette_with_transparency_and_greyscale():
    pal = Image.new("P", (2, 1))
    pal.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    pal.putpixel((0, 0), 0)
    pal.putpixel((1, 0), 1)
    out = np.asarray(load_image(png_bytes(pal, transparency=0)))
    assert tuple(out[0, 0]) == (255, 255, 255) and tuple(out[0, 1]) == (0, 255, 0)
    grey16 = Image.fromarray(np.full((3, 3), 65535, dtype=np.uint16))
    assert tuple(np.asarray(load_image(grey16))[0, 0]) == (255, 255, 255)


def test_to_pixels_shapes_and_normalisation():
    white = Image.new("RGB", (30, 20), "white")
    px = to_pixels([white, white], 32, mean=(0.5,) * 3, std=(0.5,) * 3)
    assert px.shape == (2, 3, 32, 32)
    assert px.max().item() == pytest.approx(1.0)
    with pytest.raises(ImageError, match="no images"):
        to_pixels([], 32)
