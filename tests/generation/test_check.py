"""The pixel checker: exact on canonical renders, and each attribute can fail on its own."""

import random

import pytest

from mmllm.generation.check import check, detect
from mmllm.generation.prompts import COLOURS, SHAPES, DrawSpec, draw, sample_spec


@pytest.mark.parametrize("size", [64, 128])
def test_canonical_renders_pass(size):
    rng = random.Random(5)
    for _ in range(60):
        spec = sample_spec(rng, heldout=None)
        image = draw(spec).resize((size, size))
        result = check(image, spec)
        assert result.passed, (spec.prompt, result.found)


def test_every_shape_and_colour_is_recognised_at_64_px():
    for shape in SHAPES:
        for colour in COLOURS:
            found = detect(draw(DrawSpec("single", [(colour, shape)])).resize((64, 64)))
            assert [(o.colour, o.shape) for o in found] == [(colour, shape)]


def spec(prompt_kind, objects, relation=None, count=1):
    return DrawSpec(prompt_kind, objects, relation=relation, count=count)


def test_wrong_colour_fails_colour():
    image = draw(spec("single", [("red", "circle")]))
    result = check(image, spec("single", [("blue", "circle")]))
    assert not result.colour and not result.passed


def test_wrong_shape_fails_only_shape():
    image = draw(spec("single", [("red", "star")]))
    result = check(image, spec("single", [("red", "square")]))
    assert result.colour and result.count and not result.shape and not result.passed


def test_wrong_count_fails_only_count():
    image = draw(spec("count", [("green", "triangle")], count=3))
    result = check(image, spec("count", [("green", "triangle")], count=2))
    assert result.colour and result.shape and not result.count and not result.passed


def test_swapped_relation_fails_only_relation():
    objects = [("red", "circle"), ("blue", "square")]
    image = draw(spec("pair", objects, relation="left of"))
    result = check(image, spec("pair", objects, relation="right of"))
    assert result.colour and result.shape and result.count and result.relation is False
    assert check(image, spec("pair", objects, relation="left of")).passed
    assert not check(
        draw(spec("pair", objects, relation="above")), spec("pair", objects, "left of")
    ).passed


def test_blank_image_finds_nothing():
    from PIL import Image

    assert detect(Image.new("RGB", (64, 64), "white")) == []
    assert not check(
        Image.new("RGB", (64, 64), "white"), spec("single", [("red", "circle")])
    ).passed
