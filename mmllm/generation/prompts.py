"""Generation prompts with a known answer: "a red circle left of a blue square" -> its scene.

Every prompt comes with a :class:`DrawSpec` (what must be in the image) and a canonical scene
drawn by :func:`mmllm.data.scenes.render`, so a generator can be trained on (prompt, image) pairs
and its samples checked against the spec. Layouts are fixed per prompt kind (one object in the
centre, two side by side or stacked, 1-4 objects in a fixed pattern): the prompt alone decides
the image, which is what a small LLM can learn from a few thousand examples.

Held-out combinations: :data:`HELDOUT_PAIRS` (one shape per colour) never appear in training
prompts; test prompts that use one measure compositional generalisation separately.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field

from PIL import Image

from mmllm.data.scenes import PLURALS, Obj, Scene, render

#: Colours and shapes a prompt can name: well-separated palette entries only.
COLOURS = ("red", "orange", "yellow", "green", "blue", "purple", "pink", "black")
SHAPES = ("circle", "square", "triangle", "star", "diamond", "hexagon", "cross", "rectangle")
RELATIONS = ("left of", "right of", "above", "below")
NUMBERS = {1: "one", 2: "two", 3: "three", 4: "four"}
KINDS = ("single", "pair", "count")

#: (colour, shape) combinations never shown in training.
HELDOUT_PAIRS = frozenset((c, SHAPES[(3 * i + 1) % len(SHAPES)]) for i, c in enumerate(COLOURS))

RENDER_SIZE = 128
_COUNT_LAYOUTS = {
    1: [(0.5, 0.5)],
    2: [(0.28, 0.5), (0.72, 0.5)],
    3: [(0.5, 0.27), (0.27, 0.72), (0.73, 0.72)],
    4: [(0.28, 0.28), (0.72, 0.28), (0.28, 0.72), (0.72, 0.72)],
}
_PAIR_LAYOUTS = {  # first object, second object
    "left of": ((0.27, 0.5), (0.73, 0.5)),
    "right of": ((0.73, 0.5), (0.27, 0.5)),
    "above": ((0.5, 0.27), (0.5, 0.73)),
    "below": ((0.5, 0.73), (0.5, 0.27)),
}
SIZES = {"single": 0.3, "pair": 0.19, "count": 0.17}


@dataclass
class DrawSpec:
    """What an image must show: ``objects`` as (colour, shape), a ``count`` or a ``relation``.

    ``relation`` reads "objects[0] <relation> objects[1]"; for ``kind == "count"``, ``objects``
    holds the one (colour, shape) and ``count`` how many.
    """

    kind: str
    objects: list[tuple[str, str]]
    relation: str | None = None
    count: int = 1
    prompt: str = field(default="", compare=False)

    def uses_heldout(self) -> bool:
        return any(tuple(o) in HELDOUT_PAIRS for o in self.objects)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, row: dict) -> DrawSpec:
        row = dict(row)
        row["objects"] = [tuple(o) for o in row["objects"]]
        return cls(**row)


def prompt_text(spec: DrawSpec) -> str:
    """The English prompt for a spec."""
    if spec.kind == "single":
        c, s = spec.objects[0]
        return f"a {c} {s}"
    if spec.kind == "pair":
        (c1, s1), (c2, s2) = spec.objects
        return f"a {c1} {s1} {spec.relation} a {c2} {s2}"
    c, s = spec.objects[0]
    return f"{NUMBERS[spec.count]} {c} {s if spec.count == 1 else PLURALS[s]}"


def scene_of(spec: DrawSpec, size: int = RENDER_SIZE) -> Scene:
    """The canonical scene for a spec: white background, fixed layout."""
    r = SIZES[spec.kind]
    if spec.kind == "pair":
        places = _PAIR_LAYOUTS[spec.relation]
        objs = [Obj(s, c, x, y, r) for (c, s), (x, y) in zip(spec.objects, places, strict=True)]
    else:
        (c, s), places = spec.objects[0], _COUNT_LAYOUTS[spec.count]
        objs = [Obj(s, c, x, y, r) for x, y in places]
    return Scene(size, size, "plain", (255, 255, 255), objs)


def draw(spec: DrawSpec, size: int = RENDER_SIZE) -> Image.Image:
    return render(scene_of(spec, size))


def sample_spec(rng: random.Random, heldout: bool | None = False) -> DrawSpec:
    """One random spec; ``heldout=False`` avoids :data:`HELDOUT_PAIRS`, ``True`` needs one,
    ``None`` takes either."""
    while True:
        kind = rng.choices(KINDS, weights=(3, 4, 3))[0]
        if kind == "pair":
            c1, c2 = rng.sample(COLOURS, 2)
            objects = [(c1, rng.choice(SHAPES)), (c2, rng.choice(SHAPES))]
            spec = DrawSpec(kind, objects, relation=rng.choice(RELATIONS))
        elif kind == "count":
            spec = DrawSpec(
                kind, [(rng.choice(COLOURS), rng.choice(SHAPES))], count=rng.randint(1, 4)
            )
        else:
            spec = DrawSpec(kind, [(rng.choice(COLOURS), rng.choice(SHAPES))])
        if heldout is None or spec.uses_heldout() == heldout:
            spec.prompt = prompt_text(spec)
            return spec
