"""Does an image show what its prompt asked for? A pixel-level checker for generated images.

Each pixel is assigned to the nearest prompt colour (or to none when no colour is close), each
colour's connected regions are objects (scipy's labelling), and each object's shape is the
template -- the same renderer the data uses, scaled to the object's area and centred on it --
that overlaps it best (IoU). The checker is exact on the canonical renders (tested), so its
errors on generated images are the generator's.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from functools import cache

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

from mmllm.data.scenes import PALETTE, Obj, draw_object
from mmllm.generation.prompts import COLOURS, SHAPES, DrawSpec

#: Largest RGB distance at which a pixel still counts as a colour.
MAX_COLOUR_DISTANCE = 70.0
#: Smallest object, as a fraction of the image area (smaller regions are noise).
MIN_OBJECT_AREA = 0.012
#: Regions that match no shape this badly are anti-aliasing rims, not objects.
MIN_SHAPE_IOU = 0.4
DETECT_SIZE = 192


@dataclass
class DetectedObject:
    colour: str
    shape: str
    x: float  # centroid, fraction of width
    y: float
    area: float  # fraction of the image
    shape_iou: float


@dataclass
class CheckResult:
    """Per-attribute verdicts (``None`` = not asked by this prompt) and the overall one."""

    colour: bool
    shape: bool
    count: bool
    relation: bool | None
    passed: bool
    found: list[DetectedObject]

    def to_dict(self) -> dict:
        return asdict(self)


@cache
def _area_factor(shape: str) -> float:
    """Area of a rendered shape of radius 1 (measured on a large render)."""
    side = 400
    mask = _render_mask(shape, side, side, side / 2, side / 2, side * 0.4)
    return mask.sum() / (side * 0.4) ** 2


def _render_mask(shape: str, w: int, h: int, cx: float, cy: float, r: float) -> np.ndarray:
    image = Image.new("RGB", (w, h), (0, 0, 0))
    draw_object(ImageDraw.Draw(image), Obj(shape, "red", cx / w, cy / h, r / min(w, h)), w, h)
    return np.asarray(image)[:, :, 0] > 0


def colour_map(pixels: np.ndarray) -> np.ndarray:
    """``[H, W, 3]`` uint8 -> ``[H, W]`` index into :data:`COLOURS`, ``-1`` for none."""
    ref = np.array([PALETTE[c] for c in COLOURS], dtype=np.float32)
    dist = np.linalg.norm(pixels[:, :, None, :].astype(np.float32) - ref, axis=-1)
    nearest = dist.argmin(-1)
    return np.where(dist.min(-1) <= MAX_COLOUR_DISTANCE, nearest, -1)


def classify_shape(mask: np.ndarray) -> tuple[str, float]:
    """The template shape that overlaps a region best, and that IoU."""
    h, w = mask.shape
    ys, xs = np.nonzero(mask)
    cy, cx, area = ys.mean() + 0.5, xs.mean() + 0.5, float(mask.sum())
    best, best_iou = SHAPES[0], -1.0
    for shape in SHAPES:
        r = math.sqrt(area / _area_factor(shape))
        template = _render_mask(shape, w, h, cx, cy, r)
        iou = (template & mask).sum() / max(1, (template | mask).sum())
        if iou > best_iou:
            best, best_iou = shape, float(iou)
    return best, best_iou


def detect(image: Image.Image) -> list[DetectedObject]:
    """Every object in an image: colour, shape, centroid, area."""
    image = image.convert("RGB")
    if min(image.size) < DETECT_SIZE:  # small renders: shapes are told apart on a bicubic upscale
        scale = DETECT_SIZE / min(image.size)
        image = image.resize(
            (round(image.width * scale), round(image.height * scale)), Image.BICUBIC
        )
    pixels = np.asarray(image)
    h, w = pixels.shape[:2]
    colours = colour_map(pixels)
    found = []
    for ci, colour in enumerate(COLOURS):
        labels, n = ndimage.label(colours == ci)
        for k in range(1, n + 1):
            mask = labels == k
            area = mask.sum() / (h * w)
            if area < MIN_OBJECT_AREA:
                continue
            shape, iou = classify_shape(mask)
            if iou < MIN_SHAPE_IOU:
                continue
            ys, xs = np.nonzero(mask)
            found.append(
                DetectedObject(
                    colour, shape, float(xs.mean() / w), float(ys.mean() / h), float(area), iou
                )
            )
    return found


def _relation_holds(a: DetectedObject, b: DetectedObject, relation: str) -> bool:
    dx, dy = b.x - a.x, b.y - a.y  # a relative to b: "a left of b" means dx > 0
    horizontal = abs(dx) > abs(dy)
    return bool(
        {
            "left of": horizontal and dx > 0,
            "right of": horizontal and dx < 0,
            "above": not horizontal and dy > 0,
            "below": not horizontal and dy < 0,
        }[relation]
    )


def check(image: Image.Image, spec: DrawSpec) -> CheckResult:
    """Score one image against its spec; ``passed`` needs every asked attribute and nothing else."""
    found = detect(image)
    by_colour = {c: [o for o in found if o.colour == c] for c in {c for c, _ in spec.objects}}
    extra = [o for o in found if o.colour not in by_colour]
    if spec.kind == "pair":
        groups = [by_colour[c] for c, _ in spec.objects]
        colour_ok = all(groups)
        count_ok = all(len(g) == 1 for g in groups) and not extra
        shape_ok = colour_ok and all(
            g[0].shape == s for g, (_, s) in zip(groups, spec.objects, strict=True)
        )
        relation = colour_ok and _relation_holds(groups[0][0], groups[1][0], spec.relation)
        passed = count_ok and shape_ok and relation
        return CheckResult(colour_ok, shape_ok, count_ok, bool(relation), bool(passed), found)
    colour, shape = spec.objects[0]
    group = by_colour[colour]
    colour_ok = bool(group)
    count_ok = len(group) == spec.count and not extra
    shape_ok = colour_ok and all(o.shape == shape for o in group)
    return CheckResult(colour_ok, shape_ok, count_ok, None, bool(count_ok and shape_ok), found)
