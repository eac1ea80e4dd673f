"""Scenes of shapes, colours and text, and how to draw them.

A :class:`Scene` is a plain description (image size, background, objects, text); :func:`render`
turns it into a PIL image. :meth:`Scene.content_key` is a quantised description of what the image
shows, used to keep splits disjoint by content rather than by file name.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from dataclasses import asdict, dataclass, field

from PIL import Image, ImageDraw, ImageFont

#: Named colours: the basic colour terms plus common extras. Values are chosen to stay apart.
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "orange": (255, 140, 0),
    "yellow": (245, 215, 0),
    "green": (30, 150, 40),
    "blue": (30, 80, 230),
    "purple": (125, 40, 175),
    "pink": (255, 110, 185),
    "brown": (125, 75, 30),
    "black": (10, 10, 10),
    "white": (255, 255, 255),
    "grey": (128, 128, 128),
    "teal": (0, 128, 128),
    "navy": (0, 0, 110),
    "cyan": (0, 225, 235),
    "magenta": (225, 0, 225),
    "lime": (165, 245, 30),
}

SHAPES = ("circle", "square", "rectangle", "triangle", "star", "diamond", "hexagon", "cross")
PLURALS = {s: s + ("es" if s.endswith("ss") else "s") for s in SHAPES}

#: Image sizes (width, height) scenes are drawn at.
IMAGE_SIZES = ((224, 224), (256, 256), (320, 240), (384, 384), (448, 448), (480, 360), (512, 512))

BACKGROUNDS = ("plain", "tinted", "cluttered")


@dataclass
class Obj:
    """One shape: centre ``(x, y)`` and ``size`` (radius) as fractions of the shorter side."""

    shape: str
    colour: str
    x: float
    y: float
    size: float

    @property
    def name(self) -> str:
        return f"{self.colour} {self.shape}"

    def box(self, width: int, height: int) -> tuple[float, float, float, float]:
        """Bounding box ``(x0, y0, x1, y1)`` as fractions of the image, as :func:`draw_object`
        draws the shape (squares and rectangles are narrower than their radius)."""
        unit = min(width, height)
        cx, cy, r = self.x * width, self.y * height, self.size * unit
        if self.shape == "circle":
            x0, y0, x1, y1 = cx - r, cy - r, cx + r, cy + r
        elif self.shape == "square":
            x0, y0, x1, y1 = cx - 0.85 * r, cy - 0.85 * r, cx + 0.85 * r, cy + 0.85 * r
        elif self.shape == "rectangle":
            x0, y0, x1, y1 = cx - r, cy - 0.5 * r, cx + r, cy + 0.5 * r
        else:
            xs, ys = zip(*_polygon(self.shape, cx, cy, r), strict=True)
            x0, y0, x1, y1 = min(xs), min(ys), max(xs), max(ys)
        return (x0 / width, y0 / height, x1 / width, y1 / height)


@dataclass
class Text:
    """Rendered text: the string, centre, height as a fraction of the shorter side, colour."""

    value: str
    x: float
    y: float
    height: float
    colour: str

    def box(self, width: int, height: int) -> tuple[float, float, float, float]:
        """The rendered text's ink box ``(x0, y0, x1, y1)`` in fractions of the image, from the
        font's metrics (the same call :func:`render` draws with)."""
        font = _font(round(self.height * min(width, height)))
        x0, y0, x1, y1 = font.getbbox(self.value, anchor="mm")
        cx, cy = self.x * width, self.y * height
        return (
            max(0.0, (cx + x0) / width),
            max(0.0, (cy + y0) / height),
            min(1.0, (cx + x1) / width),
            min(1.0, (cy + y1) / height),
        )


@dataclass
class Scene:
    width: int
    height: int
    background: str
    bg_rgb: tuple[int, int, int]
    objects: list[Obj] = field(default_factory=list)
    text: Text | None = None
    clutter_seed: int = 0

    def content_key(self) -> str:
        """A hash of what the image shows, quantised so near-identical scenes collide."""

        def q(v: float) -> int:
            return round(v * 8)

        desc = {
            "bg": self.background,
            "objects": sorted(
                (o.shape, o.colour, q(o.x), q(o.y), round(o.size * 20)) for o in self.objects
            ),
            "text": self.text.value.lower() if self.text else None,
        }
        return hashlib.sha256(json.dumps(desc).encode()).hexdigest()

    def to_dict(self) -> dict:
        return asdict(self)


def colour_distance(a: tuple[int, int, int], b: tuple[int, int, int]) -> float:
    return math.dist(a, b)


def visible_colours(bg: tuple[int, int, int], min_distance: float = 110.0) -> list[str]:
    """Palette colours that stand out against a background colour."""
    return [name for name, rgb in PALETTE.items() if colour_distance(rgb, bg) >= min_distance]


def sample_background(
    rng: random.Random, kind: str | None = None
) -> tuple[str, tuple[int, int, int]]:
    kind = kind or rng.choice(BACKGROUNDS)
    if kind == "plain":
        return kind, rng.choice(((255, 255, 255), (238, 238, 238), (250, 248, 240)))
    # tinted and cluttered: a light pastel tint
    base = [rng.randint(200, 250) for _ in range(3)]
    return kind, (base[0], base[1], base[2])


def _polygon(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    def ring(n: int, radius: float, phase: float) -> list[tuple[float, float]]:
        return [
            (
                cx + radius * math.cos(phase + 2 * math.pi * i / n),
                cy + radius * math.sin(phase + 2 * math.pi * i / n),
            )
            for i in range(n)
        ]

    if shape == "triangle":
        return ring(3, r, -math.pi / 2)
    if shape == "diamond":
        return ring(4, r, -math.pi / 2)
    if shape == "hexagon":
        return ring(6, r, 0.0)
    if shape == "star":
        outer, inner = ring(5, r, -math.pi / 2), ring(5, r * 0.42, -math.pi / 2 + math.pi / 5)
        return [p for pair in zip(outer, inner, strict=True) for p in pair]
    if shape == "cross":
        t = r * 0.33
        return [
            (cx - t, cy - r),
            (cx + t, cy - r),
            (cx + t, cy - t),
            (cx + r, cy - t),
            (cx + r, cy + t),
            (cx + t, cy + t),
            (cx + t, cy + r),
            (cx - t, cy + r),
            (cx - t, cy + t),
            (cx - r, cy + t),
            (cx - r, cy - t),
            (cx - t, cy - t),
        ]
    raise ValueError(shape)


def draw_object(draw: ImageDraw.ImageDraw, obj: Obj, width: int, height: int) -> None:
    unit = min(width, height)
    cx, cy, r = obj.x * width, obj.y * height, obj.size * unit
    fill = PALETTE[obj.colour]
    outline = (60, 60, 60) if obj.colour == "white" else None
    if obj.shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill, outline=outline)
    elif obj.shape == "square":
        s = r * 0.85
        draw.rectangle((cx - s, cy - s, cx + s, cy + s), fill=fill, outline=outline)
    elif obj.shape == "rectangle":
        draw.rectangle((cx - r, cy - r * 0.5, cx + r, cy + r * 0.5), fill=fill, outline=outline)
    else:
        draw.polygon(_polygon(obj.shape, cx, cy, r), fill=fill, outline=outline)


def _font(px: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=max(8, px))


def _draw_clutter(draw: ImageDraw.ImageDraw, scene: Scene) -> None:
    """Low-contrast lines and blobs: texture that must be looked past, never counted as objects."""
    rng = random.Random(scene.clutter_seed)
    w, h = scene.width, scene.height
    for _ in range(rng.randint(12, 30)):
        shade = tuple(max(0, min(255, c + rng.randint(-45, 45))) for c in scene.bg_rgb)
        if rng.random() < 0.6:
            draw.line(
                (rng.uniform(0, w), rng.uniform(0, h), rng.uniform(0, w), rng.uniform(0, h)),
                fill=shade,
                width=rng.randint(1, 3),
            )
        else:
            r = rng.uniform(0.02, 0.12) * min(w, h)
            x, y = rng.uniform(0, w), rng.uniform(0, h)
            draw.ellipse((x - r, y - r * 0.6, x + r, y + r * 0.6), fill=shade)


def render(scene: Scene) -> Image.Image:
    """Draw a scene as an RGB image."""
    image = Image.new("RGB", (scene.width, scene.height), scene.bg_rgb)
    draw = ImageDraw.Draw(image)
    if scene.background == "cluttered":
        _draw_clutter(draw, scene)
    for obj in scene.objects:
        draw_object(draw, obj, scene.width, scene.height)
    if scene.text is not None:
        t = scene.text
        font = _font(round(t.height * min(scene.width, scene.height)))
        draw.text(
            (t.x * scene.width, t.y * scene.height),
            t.value,
            fill=PALETTE[t.colour],
            font=font,
            anchor="mm",
        )
    return image
