"""Chat drawing requests and image saving."""

import pytest
from PIL import Image

from mmllm.errors import MMLLMError
from mmllm.generation.requests import drawing_request, save_images


@pytest.mark.parametrize(
    ("message", "what"),
    [
        ("Draw a red circle left of a blue square.", "a red circle left of a blue square"),
        ("please draw: two blue stars", "two blue stars"),
        ("generate an image of a green cross", "a green cross"),
        ("Can you make me a picture of three red squares?", "three red squares"),
        ("What colour is the circle?", None),
        ("draw", None),
        ("Describe the drawing.", None),
    ],
)
def test_drawing_request(message, what):
    assert drawing_request(message) == what


def test_save_images_names_and_sizes(tmp_path):
    images = [Image.new("RGB", (64, 64), c) for c in ("red", "blue")]
    paths = save_images(images, tmp_path / "x.png", size=128)
    assert [p.name for p in paths] == ["x_0.png", "x_1.png"]
    assert Image.open(paths[1]).size == (128, 128)
    assert save_images(images[:1], tmp_path / "y.png", size=None) == [tmp_path / "y.png"]
    assert Image.open(tmp_path / "y.png").size == (64, 64)
    with pytest.raises(MMLLMError, match="image file name"):
        save_images(images, tmp_path / "out")
