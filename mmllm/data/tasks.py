"""The generated tasks: what each scene shows, what is asked about it, and how it is phrased.

Every task draws a scene whose answer depends on the image, and asks it in one of several
phrasings. Some phrasings are *held out*: the train split never uses them, so an evaluation can
tell whether a model learned the task or the template. Yes/no questions are balanced by the
caller (``want_yes`` alternates), and some are negated ("Is there no ...?").
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from mmllm.data.scenes import (
    IMAGE_SIZES,
    PALETTE,
    PLURALS,
    SHAPES,
    Obj,
    Scene,
    Text,
    sample_background,
    visible_colours,
)

#: Words the reading task renders.
WORDS = [
    "cat",
    "dog",
    "sun",
    "moon",
    "tree",
    "book",
    "fish",
    "bird",
    "star",
    "road",
    "lamp",
    "door",
    "ship",
    "milk",
    "rain",
    "snow",
    "wind",
    "fire",
    "gold",
    "king",
    "blue",
    "open",
    "stop",
    "play",
    "jump",
    "fast",
    "slow",
    "home",
    "park",
    "boat",
    "cake",
    "frog",
    "lion",
    "bear",
    "wolf",
    "apple",
    "river",
    "house",
    "green",
    "table",
    "chair",
    "water",
    "light",
    "music",
    "paper",
    "stone",
    "cloud",
    "bread",
    "plant",
    "robot",
    "train",
    "clock",
]

POSITIONS = {
    (0, 0): "top left",
    (1, 0): "top",
    (2, 0): "top right",
    (0, 1): "left",
    (1, 1): "center",
    (2, 1): "right",
    (0, 2): "bottom left",
    (1, 2): "bottom",
    (2, 2): "bottom right",
}


@dataclass(frozen=True)
class Phrasings:
    """A question's wordings: ``seen`` ones train, ``heldout`` ones only evaluate, and
    ``extra`` paraphrases widen training when asked for (``phrasings="wide"``). The extras
    are never in validation or test rows, so the held-out score still measures wordings the
    model never trained on; they exist so a model learns the question, not a template."""

    seen: tuple[str, ...]
    heldout: tuple[str, ...]
    extra: tuple[str, ...] = ()


@dataclass(frozen=True)
class Task:
    name: str
    description: str
    phrasings: dict[str, Phrasings]
    make: Callable[[random.Random, Scene, bool], tuple[str, dict[str, str], str]]
    yes_no: bool = False


# -- placement ---------------------------------------------------------------------------------


def new_scene(rng: random.Random, background: str | None = None) -> Scene:
    width, height = rng.choice(IMAGE_SIZES)
    kind, rgb = sample_background(rng, background)
    return Scene(width, height, kind, rgb, clutter_seed=rng.randrange(2**31))


def colours_for(scene: Scene) -> list[str]:
    return visible_colours(scene.bg_rgb)


def place(
    rng: random.Random,
    scene: Scene,
    shape: str,
    colour: str,
    size: float,
    region: tuple[float, float, float, float] = (0.0, 0.0, 1.0, 1.0),
    tries: int = 200,
) -> Obj:
    """Put an object at a free spot inside ``region`` (x0, y0, x1, y1 as fractions)."""
    unit = min(scene.width, scene.height)
    rx, ry = size * unit / scene.width, size * unit / scene.height
    x0, y0, x1, y1 = region
    for _ in range(tries):
        x = rng.uniform(max(x0, rx + 0.01), min(x1, 1 - rx - 0.01))
        y = rng.uniform(max(y0, ry + 0.01), min(y1, 1 - ry - 0.01))
        if all(_apart(scene, o, x, y, size) for o in scene.objects) and _clear_of_text(
            scene, x, y, size
        ):
            obj = Obj(shape, colour, x, y, size)
            scene.objects.append(obj)
            return obj
    raise _Retry


def _apart(scene: Scene, o: Obj, x: float, y: float, size: float) -> bool:
    unit = min(scene.width, scene.height)
    dx = (o.x - x) * scene.width / unit
    dy = (o.y - y) * scene.height / unit
    return (dx * dx + dy * dy) ** 0.5 > (o.size + size) * 1.15 + 0.02


def _clear_of_text(scene: Scene, x: float, y: float, size: float) -> bool:
    t = scene.text
    if t is None:
        return True
    return abs(y - t.y) > t.height + size + 0.02


class _Retry(Exception):
    """The sampled layout did not fit: the generator draws a new scene."""


def _size(rng: random.Random) -> float:
    return rng.uniform(0.07, 0.16)


def _distinct_objects(rng: random.Random, scene: Scene, n: int) -> list[Obj]:
    """n objects with pairwise different shapes and colours, so each is named uniquely."""
    shapes = rng.sample(SHAPES, n)
    colours = rng.sample(colours_for(scene), n)
    return [place(rng, scene, s, c, _size(rng)) for s, c in zip(shapes, colours, strict=True)]


# -- tasks -------------------------------------------------------------------------------------


def _shape(rng, scene, want_yes):
    target, *_ = _distinct_objects(rng, scene, rng.randint(1, 4))
    return "open", {"colour": target.colour}, target.shape


def _colour(rng, scene, want_yes):
    target, *_ = _distinct_objects(rng, scene, rng.randint(1, 4))
    return "open", {"shape": target.shape}, target.colour


def _count(rng, scene, want_yes):
    shape, other = rng.sample(SHAPES, 2)
    colours = colours_for(scene)
    n = rng.choice((0, 1, 2, 2, 3, 3, 4, 4, 5, 6))
    size = rng.uniform(0.05, 0.09)
    for _ in range(n):
        place(rng, scene, shape, rng.choice(colours), size)
    for _ in range(rng.randint(0, 3)):
        place(rng, scene, other, rng.choice(colours), size)
    return "open", {"things": PLURALS[shape]}, str(n)


def _position(rng, scene, want_yes):
    cell = rng.choice(list(POSITIONS))
    cx, cy = (cell[0] + 0.5) / 3, (cell[1] + 0.5) / 3
    shape, colour = rng.choice(SHAPES), rng.choice(colours_for(scene))
    target = place(
        rng,
        scene,
        shape,
        colour,
        rng.uniform(0.06, 0.1),
        region=(cx - 0.07, cy - 0.07, cx + 0.07, cy + 0.07),
    )
    for _ in range(rng.randint(0, 2)):
        s = rng.choice([x for x in SHAPES if x != shape])
        c = rng.choice([x for x in colours_for(scene) if x != colour])
        place(rng, scene, s, c, rng.uniform(0.05, 0.09))
    return "open", {"thing": target.name}, POSITIONS[cell]


_RELATIONS = ("left of", "right of", "above", "below")
_OPPOSITE = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}


def _relation_between(a: Obj, b: Obj, scene: Scene) -> tuple[str, str]:
    """Where ``a`` lies from ``b`` along the axis they are furthest apart on (what a person
    answers), and the relation that holds on the other axis."""
    dx, dy = (a.x - b.x) * scene.width, (a.y - b.y) * scene.height
    by_axis = ("right of" if dx > 0 else "left of"), ("below" if dy > 0 else "above")
    return by_axis if abs(dx) >= abs(dy) else by_axis[::-1]


def _relation(rng, scene, want_yes):
    """Two objects on either side of a random axis; "is A <rel> B?" or "where is A from B?".

    The answer is read off the picture, not off how the scene was built: the relation is the one
    along the axis on which the two lie furthest apart (they are placed apart on ``axis`` but
    anywhere on the other, so a pair built left/right may lie mostly one above the other), and a
    "no" question never asks a relation that holds on the other axis ("Is A above B?" when A is
    left of B and also above it is not a "no"). Same random draws as before this rule, so every
    other sample of a split is unchanged.
    """
    axis = rng.choice("xy")
    first, second = (0.05, 0.42), (0.58, 0.95)
    a_region = (first[0], 0.05, first[1], 0.95) if axis == "x" else (0.05, first[0], 0.95, first[1])
    b_region = (
        (second[0], 0.05, second[1], 0.95) if axis == "x" else (0.05, second[0], 0.95, second[1])
    )
    shapes, colours = rng.sample(SHAPES, 2), rng.sample(colours_for(scene), 2)
    size = rng.uniform(0.06, 0.12)
    a = place(rng, scene, shapes[0], colours[0], size, a_region)
    b = place(rng, scene, shapes[1], colours[1], size, b_region)
    if rng.random() < 0.5:
        a, b = b, a  # a may be after b: the relation is read off the picture
    true_rel, also_holds = _relation_between(a, b, scene)
    if rng.random() < 0.35:
        return (
            "open",
            {"a": a.name, "b": b.name},
            {"left of": "left", "right of": "right"}.get(true_rel, true_rel),
        )
    rel = true_rel if want_yes else rng.choice([r for r in _RELATIONS if r != true_rel])
    if not want_yes and rel == also_holds:  # true on the other axis: ask the opposite instead
        rel = _OPPOSITE[true_rel]
    return "yes_no", {"a": a.name, "b": b.name, "rel": rel}, "yes" if want_yes else "no"


def _exists(rng, scene, want_yes):
    objects = _distinct_objects(rng, scene, rng.randint(1, 4))
    negated = rng.random() < 0.4
    present = want_yes != negated  # "Is there no X?" is answered yes when X is absent
    if present:
        name = rng.choice(objects).name
    else:
        used = {(o.shape, o.colour) for o in objects}
        while True:  # absent, but often sharing the shape or the colour of a present object
            ref = rng.choice(objects)
            shape = ref.shape if rng.random() < 0.4 else rng.choice(SHAPES)
            colour = ref.colour if shape != ref.shape else rng.choice(list(PALETTE))
            if (shape, colour) not in used:
                name = f"{colour} {shape}"
                break
    return ("negated" if negated else "yes_no"), {"thing": name}, "yes" if want_yes else "no"


def _small_object(rng, scene, want_yes):
    colours = colours_for(scene)
    target_shape, *distractor_shapes = rng.sample(SHAPES, 3)
    target_colour = rng.choice(colours)
    others = [c for c in colours if c != target_colour]
    size = rng.uniform(0.025, 0.045)
    place(rng, scene, target_shape, target_colour, size)
    for _ in range(rng.randint(8, 18)):
        place(rng, scene, rng.choice(distractor_shapes), rng.choice(others), size, tries=60)
    if rng.random() < 0.5:
        return "colour", {"shape": target_shape}, target_colour
    return "shape", {"colour": target_colour}, target_shape


def _text(rng, scene, want_yes):
    colour = rng.choice(
        [c for c in colours_for(scene) if c not in ("yellow", "lime", "cyan")] or ["black"]
    )
    if rng.random() < 0.5:
        value, kind = rng.choice(WORDS), "word"
        value = value.upper() if rng.random() < 0.4 else value
    else:
        value, kind = str(rng.randint(0, 9999)), "number"
    height = rng.uniform(0.08, 0.2)
    scene.text = Text(value, rng.uniform(0.35, 0.65), rng.uniform(0.25, 0.75), height, colour)
    if rng.random() < 0.5:
        place(
            rng, scene, rng.choice(SHAPES), rng.choice(colours_for(scene)), rng.uniform(0.05, 0.08)
        )
    return kind, {}, value.lower()


def _caption(rng, scene, want_yes):
    objects = sorted(_distinct_objects(rng, scene, rng.randint(1, 3)), key=lambda o: o.x)
    names = [f"a {o.name}" for o in objects]
    caption = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
    return "open", {}, caption


TASKS: dict[str, Task] = {
    t.name: t
    for t in (
        Task(
            "shape",
            "name the shape of the object of a given colour",
            {
                "open": Phrasings(
                    (
                        "What shape is the {colour} object?",
                        "Which shape is {colour}?",
                        "What is the shape of the {colour} thing?",
                        "Name the shape that is {colour}.",
                    ),
                    ("Tell me the shape of the {colour} item.",),
                    extra=(
                        "Which shape has the colour {colour}?",
                        "The {colour} object is which shape?",
                        "Identify the shape of the {colour} object.",
                    ),
                )
            },
            _shape,
        ),
        Task(
            "colour",
            "name the colour of the object of a given shape",
            {
                "open": Phrasings(
                    (
                        "What colour is the {shape}?",
                        "What is the color of the {shape}?",
                        "Which colour does the {shape} have?",
                        "The {shape} is what color?",
                    ),
                    ("Tell me the colour of the {shape}.",),
                    extra=(
                        "Name the colour of the {shape}.",
                        "Identify the colour of the {shape}.",
                        "What colour has the {shape} got?",
                    ),
                )
            },
            _colour,
        ),
        Task(
            "count",
            "count the objects of one shape (0-6), among other shapes",
            {
                "open": Phrasings(
                    (
                        "How many {things} are there?",
                        "Count the {things}.",
                        "What is the number of {things} in the image?",
                        "How many {things} do you see?",
                    ),
                    ("Give the count of {things}.",),
                    extra=(
                        "How many {things} can be seen?",
                        "Count how many {things} there are.",
                        "What is the total number of {things}?",
                    ),
                )
            },
            _count,
        ),
        Task(
            "position",
            "where an object is, in a 3x3 layout (top left ... bottom right)",
            {
                "open": Phrasings(
                    (
                        "Where is the {thing}?",
                        "In which part of the image is the {thing}?",
                        "Where in the picture is the {thing} located?",
                    ),
                    ("Which region holds the {thing}?",),
                    extra=(
                        "What part of the image is the {thing} in?",
                        "Where can the {thing} be found?",
                        "Locate the {thing}.",
                    ),
                )
            },
            _position,
        ),
        Task(
            "relation",
            "spatial relation of two objects (left of, right of, above, below)",
            {
                "yes_no": Phrasings(
                    (
                        "Is the {a} {rel} the {b}?",
                        "Is there a {a} {rel} the {b}?",
                        "Does the {a} appear {rel} the {b}?",
                    ),
                    ("Would you say the {a} is {rel} the {b}?",),
                    extra=(
                        "Is it true that the {a} is {rel} the {b}?",
                        "Is the {a} located {rel} the {b}?",
                        "Check: is the {a} {rel} the {b}?",
                    ),
                ),
                "open": Phrasings(
                    (
                        "Where is the {a} relative to the {b}?",
                        "Is the {a} left, right, above or below the {b}?",
                    ),
                    ("Relative to the {b}, where is the {a}?",),
                    extra=(
                        "In which direction from the {b} is the {a}?",
                        "Taking the {b} as reference, where is the {a}?",
                        "Where is the {a} when compared with the {b}?",
                    ),
                ),
            },
            _relation,
            yes_no=True,
        ),
        Task(
            "exists",
            "is an object present; includes negated questions ('Is there no ...?')",
            {
                "yes_no": Phrasings(
                    (
                        "Is there a {thing}?",
                        "Is there a {thing} in the image?",
                        "Can you see a {thing}?",
                    ),
                    ("Does the picture contain a {thing}?",),
                    extra=(
                        "Is a {thing} visible?",
                        "Does the image show a {thing}?",
                        "Is any {thing} present?",
                    ),
                ),
                "negated": Phrasings(
                    ("Is there no {thing}?", "Is there no {thing} in the image?"),
                    ("Is the image without a {thing}?",),
                    extra=(
                        "Is the {thing} absent?",
                        "Is it true that there is no {thing}?",
                        "Is the {thing} missing from the picture?",
                    ),
                ),
            },
            _exists,
            yes_no=True,
        ),
        Task(
            "small_object",
            "colour or shape of one small object among many small distractors",
            {
                "colour": Phrasings(
                    ("What colour is the small {shape}?", "What is the color of the tiny {shape}?"),
                    ("Which colour is the little {shape}?",),
                    extra=(
                        "Which colour does the small {shape} have?",
                        "Name the colour of the tiny {shape}.",
                    ),
                ),
                "shape": Phrasings(
                    ("What shape is the small {colour} object?", "Which small shape is {colour}?"),
                    ("What is the shape of the little {colour} object?",),
                    extra=(
                        "Name the shape of the small {colour} object.",
                        "The tiny {colour} object is which shape?",
                    ),
                ),
            },
            _small_object,
        ),
        Task(
            "text",
            "read a rendered word or number (answer lower-case; digits)",
            {
                "word": Phrasings(
                    (
                        "What word is written in the image?",
                        "What does the text say?",
                        "Read the word.",
                    ),
                    ("Which word can you read?",),
                    extra=(
                        "What is written?",
                        "Which word appears in the image?",
                        "Read the text.",
                    ),
                ),
                "number": Phrasings(
                    (
                        "What number is written in the image?",
                        "What number is shown?",
                        "Read the number.",
                    ),
                    ("Which number can you read?",),
                    extra=(
                        "Which number appears in the image?",
                        "What is the number in the image?",
                        "Read the digits.",
                    ),
                ),
            },
            _text,
        ),
        Task(
            "caption",
            "short caption listing the objects left to right ('a red circle and a blue star')",
            {
                "open": Phrasings(
                    (
                        "Describe the image briefly.",
                        "Write a short caption.",
                        "What is in the picture?",
                    ),
                    ("Give a brief description of the image.",),
                    extra=(
                        "Briefly describe the picture.",
                        "Caption this image.",
                        "What does the image show?",
                    ),
                )
            },
            _caption,
        ),
    )
}
