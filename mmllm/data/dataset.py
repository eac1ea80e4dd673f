"""Read and validate a data folder in mmllm's data format (ARCHITECTURE.md, "Data format").

A folder holds ``*.jsonl`` files; each row has ``messages`` (chat turns whose ``content`` is a
list of ``{"type": "image"}`` / ``{"type": "text", "text": ...}`` parts) and ``images`` (paths
relative to the JSONL file, one per image part, in order). ``answer`` and ``task`` are optional
for training and used by evaluation. Every problem is reported with file, line and fix.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from mmllm.errors import DataFormatError

ROLES = ("system", "user", "assistant")


@dataclass
class Sample:
    """One validated row: chat messages, absolute image paths, and eval fields if present."""

    messages: list[dict]
    images: list[Path]
    answer: str | None = None
    task: str = "default"
    extra: dict = field(default_factory=dict)
    regions: list[list[dict]] | None = None

    @property
    def question(self) -> str:
        """Text of the last user turn."""
        user = [m for m in self.messages if m["role"] == "user"][-1]
        return " ".join(p["text"] for p in user["content"] if p["type"] == "text")

    def prompt_messages(self) -> list[dict]:
        """The conversation without its final assistant turn (what a model is asked)."""
        if self.messages[-1]["role"] == "assistant":
            return self.messages[:-1]
        return self.messages


def _fail(where: str, problem: str) -> DataFormatError:
    return DataFormatError(f"{where}: {problem}")


def _check_row(row: object, where: str, base: Path, check_images: bool) -> Sample:
    if not isinstance(row, dict):
        raise _fail(where, "each line must be a JSON object")
    messages = row.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _fail(where, "'messages' must be a non-empty list of chat turns")
    n_image_parts = 0
    for turn in messages:
        if not isinstance(turn, dict) or turn.get("role") not in ROLES:
            raise _fail(where, f"each message needs a 'role' in {ROLES}")
        content = turn.get("content")
        if isinstance(content, str):
            turn["content"] = content = [{"type": "text", "text": content}]
        if not isinstance(content, list) or not content:
            raise _fail(where, "message 'content' must be a non-empty list of parts")
        for part in content:
            kind = part.get("type") if isinstance(part, dict) else None
            if kind == "image":
                n_image_parts += 1
            elif kind == "text":
                if not isinstance(part.get("text"), str):
                    raise _fail(where, "a text part needs a string 'text'")
            else:
                raise _fail(where, f"unknown content part {part!r}; use 'image' or 'text' parts")
    images = row.get("images", [])
    if not isinstance(images, list) or not all(isinstance(p, str) for p in images):
        raise _fail(where, "'images' must be a list of paths relative to the JSONL file")
    if len(images) != n_image_parts:
        raise _fail(
            where,
            f"{n_image_parts} image part(s) in messages but {len(images)} path(s) in 'images'; "
            'give one path per {"type": "image"} part, in order',
        )
    paths = [(base / p).resolve() for p in images]
    if check_images:
        for p, rel in zip(paths, images, strict=True):
            if not p.is_file():
                raise _fail(where, f"image '{rel}' not found (looked for {p})")
    answer = row.get("answer")
    if answer is not None and not isinstance(answer, str):
        raise _fail(where, "'answer' must be a string")
    task = row.get("task", "default")
    regions = _check_regions(row.get("regions"), len(images), where)
    known = {"messages", "images", "answer", "task", "regions"}
    return Sample(
        messages,
        paths,
        answer,
        str(task),
        {k: v for k, v in row.items() if k not in known},
        regions,
    )


def _check_regions(regions: object, n_images: int, where: str) -> list[list[dict]] | None:
    """Optional grounding annotations: one list per image of ``{"box": [x0, y0, x1, y1],
    "text": "red circle"}``, the box in fractions of the image's width and height."""
    if regions is None:
        return None
    hint = (
        '\'regions\' must hold one list per image of {"box": [x0, y0, x1, y1], "text": ...} '
        "with the box as fractions of the image (0 <= x0 < x1 <= 1, 0 <= y0 < y1 <= 1)"
    )
    if not isinstance(regions, list) or len(regions) != n_images:
        raise _fail(where, hint)
    for per_image in regions:
        if not isinstance(per_image, list):
            raise _fail(where, hint)
        for region in per_image:
            box = region.get("box") if isinstance(region, dict) else None
            text = region.get("text") if isinstance(region, dict) else None
            ok = isinstance(text, str) and text.strip() and isinstance(box, list) and len(box) == 4
            ok = ok and all(isinstance(v, int | float) for v in box)
            if not ok or not (0 <= box[0] < box[2] <= 1 and 0 <= box[1] < box[3] <= 1):
                raise _fail(where, f"{hint}; got {region!r}")
    return regions


def load_dataset(path: str | Path, check_images: bool = True) -> list[Sample]:
    """All samples of a data folder (or of one ``.jsonl`` file), validated."""
    path = Path(path)
    if path.is_file():
        files = [path]
    elif path.is_dir():
        files = sorted(path.glob("*.jsonl"))
        if not files:
            raise DataFormatError(
                f"{path}: no *.jsonl file; a data folder holds JSONL files and their images "
                "(make one with `mmllm data make`)"
            )
    else:
        raise DataFormatError(f"{path}: no such data folder or file")
    samples = []
    for file in files:
        with file.open() as f:
            for line_no, line in enumerate(f, 1):
                if not line.strip():
                    continue
                where = f"{file}:{line_no}"
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as err:
                    raise _fail(
                        where, f"malformed JSON ({err.msg}); fix or remove the line"
                    ) from None
                samples.append(_check_row(row, where, file.parent, check_images))
    if not samples:
        raise DataFormatError(f"{path}: the JSONL files hold no rows")
    return samples
