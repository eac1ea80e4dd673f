"""Loading images safely and turning them into normalised pixel tensors.

One entry point, :func:`load_image`, for paths, bytes and PIL images. It refuses what cannot be
trusted (undecodable or truncated files, zero-size or gigantic images) with an
:class:`~mmllm.errors.ImageError` that names the problem and the fix, and converts every accepted
mode to RGB by one documented rule: transparent pixels (alpha channel, or a palette's transparent
entry) are composited onto a white background; greyscale, CMYK and 16-bit images are converted.
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from mmllm.errors import ImageError

#: Largest accepted image, in pixels (about 64 megapixels, e.g. 8000 x 8000).
MAX_PIXELS = 64_000_000

ImageLike = str | os.PathLike | bytes | Image.Image

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _open(source: ImageLike) -> tuple[Image.Image, str]:
    if isinstance(source, Image.Image):
        return source, "image"
    if isinstance(source, bytes | bytearray):
        name, handle = "image bytes", io.BytesIO(source)
    else:
        path = Path(source)
        name = str(path)
        if not path.is_file():
            raise ImageError(f"{name}: no such image file")
        handle = path
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return Image.open(handle), name
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError(
            f"{name}: not a readable image (or larger than {MAX_PIXELS:,} pixels); "
            "use a PNG, JPEG, WebP, BMP or GIF file"
        ) from None
    except OSError as err:
        raise ImageError(f"{name}: cannot open image ({err})") from None


def load_image(source: ImageLike, *, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Open, validate and convert an image to RGB.

    Args:
        source: a path, the encoded bytes, or a PIL image.
        max_pixels: refuse images with more pixels than this (checked before decoding).

    Raises:
        ImageError: unreadable, truncated, zero-size or too large.
    """
    image, name = _open(source)
    width, height = image.size
    if width == 0 or height == 0:
        raise ImageError(f"{name}: image has zero size ({width}x{height}); pass a non-empty image")
    if width * height > max_pixels:
        raise ImageError(
            f"{name}: {width}x{height} is {width * height:,} pixels, more than the "
            f"{max_pixels:,} accepted; downscale it first (or raise max_pixels)"
        )
    try:
        image.load()
    except OSError as err:
        raise ImageError(
            f"{name}: image data is truncated or corrupt ({err}); re-export the file"
        ) from None
    return to_rgb(image)


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL mode to RGB, compositing transparency onto white."""
    if image.mode == "RGB":
        return image
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    elif image.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if arr.max() > 255 else 255.0
        image = Image.fromarray((arr / peak * 255).round().astype(np.uint8), "L")
    elif image.mode == "F":
        arr = np.asarray(image, dtype=np.float64)
        image = Image.fromarray((np.clip(arr, 0, 1) * 255).round().astype(np.uint8), "L")
    if image.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def to_pixels(
    images: Sequence[ImageLike] | ImageLike,
    size: int | tuple[int, int],
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> torch.Tensor:
    """Load, resize (whole image, no crop) and normalise to a ``[B, 3, H, W]`` float tensor.

    The whole image is kept (no centre crop) because answers may depend on objects near edges.
    """
    if isinstance(images, str | os.PathLike | bytes | Image.Image):
        images = [images]
    if len(images) == 0:
        raise ImageError("no images given")
    h, w = (size, size) if isinstance(size, int) else size
    batch = np.stack(
        [np.asarray(load_image(im).resize((w, h), Image.Resampling.BICUBIC)) for im in images]
    )
    pixels = torch.from_numpy(batch).permute(0, 3, 1, 2).float().div_(255.0)
    mean_t = torch.tensor(mean).view(1, 3, 1, 1)
    std_t = torch.tensor(std).view(1, 3, 1, 1)
    return (pixels - mean_t) / std_t


def from_pixels(pixels: torch.Tensor) -> list[Image.Image]:
    """Pixels ``[B, 3, H, W]`` in ``[-1, 1]`` (a tokenizer's output) -> RGB PIL images."""
    arrays = ((pixels.detach().permute(0, 2, 3, 1) + 1) * 127.5).round().clamp(0, 255).byte()
    return [Image.fromarray(a.cpu().numpy()) for a in arrays]
