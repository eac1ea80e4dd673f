import hashlib
import json
from collections import Counter

import pytest
from PIL import Image

from mmllm.data.dataset import load_dataset
from mmllm.data.generate import make_dataset, split_of
from mmllm.data.tasks import TASKS


def rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    out = {
        s: make_dataset(root / s, 180, seed=3, split=s, progress=False) for s in ("train", "test")
    }
    return root, out


def test_deterministic_per_seed(tmp_path, sets):
    root, out = sets
    again = make_dataset(tmp_path, 180, seed=3, split="train", progress=False)
    assert again.read_text() == out["train"].read_text()
    first = rows(again)[5]["images"][0]
    assert (tmp_path / first).read_bytes() == (root / "train" / first).read_bytes()
    other = make_dataset(tmp_path / "other", 18, seed=4, split="train", progress=False)
    assert rows(other)[0]["messages"] != rows(out["train"])[0]["messages"]


def test_rows_follow_the_data_format(sets):
    root, _ = sets
    samples = load_dataset(root / "train")
    assert len(samples) == 180
    assert {s.task for s in samples} == set(TASKS)
    assert all(len(s.images) == 1 and s.answer for s in samples)


def test_splits_are_disjoint_by_content(sets):
    root, out = sets
    train, test = rows(out["train"]), rows(out["test"])
    assert not {r["content_key"] for r in train} & {r["content_key"] for r in test}

    def pixel_hash(split, r):
        return hashlib.sha256(Image.open(root / split / r["images"][0]).tobytes()).hexdigest()

    assert not {pixel_hash("train", r) for r in train} & {pixel_hash("test", r) for r in test}


def test_held_out_phrasings_only_outside_train(sets):
    _, out = sets
    train, test = rows(out["train"]), rows(out["test"])
    heldout = {t for task in TASKS.values() for p in task.phrasings.values() for t in p.heldout}
    assert all(r["phrasing"] == "seen" for r in train)
    assert any(r["phrasing"] == "heldout" for r in test)
    templates = {t.split("{")[0] for t in heldout}
    for r in train:
        question = r["messages"][0]["content"][1]["text"]
        assert not any(
            question.startswith(prefix) and prefix for prefix in templates if len(prefix) > 12
        )


def _filled(template: str, question: str) -> dict[str, str] | None:
    """The slot values if ``question`` is ``template`` with its slots filled, else None."""
    import re

    pattern = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>.+)", re.escape(template))
    match = re.fullmatch(pattern, question)
    return match.groupdict() if match else None


def _fits(question: str, templates: tuple[str, ...]) -> bool:
    """Whether ``question`` is one of ``templates`` with its slots filled."""
    return any(_filled(t, question) is not None for t in templates)


def test_wide_phrasings_add_paraphrases_never_held_out_ones(tmp_path):
    """``wide`` trains on the seen wordings plus the extra paraphrases; no held-out wording."""
    heldout = {t for task in TASKS.values() for p in task.phrasings.values() for t in p.heldout}
    extra = {t for task in TASKS.values() for p in task.phrasings.values() for t in p.extra}
    assert extra and not extra & heldout
    wide = rows(make_dataset(tmp_path, 260, seed=3, phrasings="wide", progress=False))
    assert {r["phrasing"] for r in wide} == {"seen", "extra"}
    for r in wide:
        question = r["messages"][0]["content"][1]["text"]
        options = TASKS[r["task"]].phrasings.values()
        labelled = [p.extra if r["phrasing"] == "extra" else p.seen for p in options]
        assert any(_fits(question, pool) for pool in labelled), question
        assert not any(_fits(question, p.heldout) for p in options), question


def test_yes_no_answers_are_balanced_and_negations_present(sets):
    _, out = sets
    train = rows(out["train"])
    for task in ("exists", "relation"):
        answers = Counter(
            r["answer"] for r in train if r["task"] == task and r["answer"] in ("yes", "no")
        )
        assert abs(answers["yes"] - answers["no"]) <= 3, answers
    assert any(
        "no " in r["messages"][0]["content"][1]["text"] for r in train if r["task"] == "exists"
    )


def test_images_vary_in_size_and_background(sets):
    root, out = sets
    sizes = {Image.open(root / "train" / r["images"][0]).size for r in rows(out["train"])}
    assert len(sizes) >= 4


def test_scene_split_is_a_function_of_content():
    from mmllm.data.scenes import Obj, Scene

    a = Scene(224, 224, "plain", (255, 255, 255), [Obj("star", "red", 0.5, 0.5, 0.1)])
    b = Scene(
        224, 224, "plain", (255, 255, 255), [Obj("star", "red", 0.501, 0.5, 0.1)], clutter_seed=9
    )
    assert a.content_key() == b.content_key() and split_of(a) == split_of(b)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"split": "dev"}, "split must be"),
        ({"tasks": ["shapes"]}, "unknown task"),
        ({"phrasings": "heldout"}, "train split uses only seen"),
        ({"phrasings": "wide", "split": "val"}, "wide phrasings .* are for the train split"),
        ({"phrasings": "paraphrased"}, "phrasings must be seen, wide"),
    ],
)
def test_bad_arguments(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_dataset(tmp_path, 4, progress=False, **kwargs)


def _asked(question: str) -> tuple[str, str]:
    """('colour' | 'shape', value) named by a shape or colour question, via its template."""
    for slot, task in (("colour", "shape"), ("shape", "colour")):
        options = TASKS[task].phrasings["open"]
        for template in options.seen + options.heldout:
            slots = _filled(template, question)
            if slots is not None:
                return slot, slots[slot]
    raise AssertionError(f"not a shape or colour question: {question}")


def test_dense_rows_ask_about_every_object_once(tmp_path):
    path = make_dataset(tmp_path, 90, seed=5, split="train", progress=False, dense=True)
    dense = [r for r in rows(path) if r["task"] in ("shape", "colour")]
    assert len(dense) == 20 and max(len(r["messages"]) for r in dense) >= 6
    for row in dense:
        messages = row["messages"]
        assert [m["role"] for m in messages] == ["user", "assistant"] * (len(messages) // 2)
        assert row["answer"] == messages[-1]["content"][0]["text"]
        objects = set()
        for question, answer in zip(messages[::2], messages[1::2], strict=True):
            slot, value = _asked(question["content"][-1]["text"])
            reply = answer["content"][0]["text"]
            objects.add((value, reply) if slot == "colour" else (reply, value))
        colours, shapes = zip(*objects, strict=True)
        # one turn per object; objects have distinct colours and distinct shapes
        assert len(objects) == len(messages) // 2 == len(set(colours)) == len(set(shapes))
    # the other tasks, and the same rows without dense, stay one question per image
    assert all(len(r["messages"]) == 2 for r in rows(path) if r["task"] not in ("shape", "colour"))
    plain = make_dataset(tmp_path / "plain", 90, seed=5, split="train", progress=False)
    assert all(len(r["messages"]) == 2 for r in rows(plain))


def test_regions_box_each_object_with_its_words(sets):
    """Every generated row carries one grounding region per object: its words are the
    object's colour and shape, its box is the drawn shape's (checked on the pixels: the box's
    centre has the object's colour). Rendered text is one more region, marked as text, reading
    what the text task answers (its box: tests/mmllm/test_reading.py)."""
    from mmllm.data.scenes import PALETTE, SHAPES

    root, out = sets
    for row in rows(out["train"])[:60]:
        [regions] = row["regions"]
        texts = [r for r in regions if r.get("kind") == "text"]
        if row["task"] == "text":
            assert [r["text"] for r in texts] == [row["answer"]]
        image = Image.open(root / "train" / row["images"][0]).convert("RGB")
        for region in [r for r in regions if r.get("kind") != "text"]:
            colour, shape = region["text"].split()
            assert colour in PALETTE and shape in SHAPES
            x0, y0, x1, y1 = region["box"]
            assert 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1
            centre = ((x0 + x1) / 2 * image.width, (y0 + y1) / 2 * image.height)
            pixel = image.getpixel((int(centre[0]), int(centre[1])))
            assert pixel == PALETTE[colour], (row["id"], region, pixel)


def test_relation_answers_match_the_picture(tmp_path):
    """Against the object boxes: "yes" asks the relation along the axis the two lie furthest
    apart on, "no" asks one that holds on neither axis, an open question answers the former.
    (Box centres stand for the objects' centres: a triangle's box is not centred on it, hence the
    few pixels of slack on near-diagonal pairs.)"""
    out = make_dataset(tmp_path, 150, seed=5, split="train", tasks=["relation"], progress=False)
    words = {"left": ("x", -1), "right": ("x", 1), "above": ("y", -1), "below": ("y", 1)}
    kinds = Counter()
    for r in rows(out):
        width, height = Image.open(tmp_path / r["images"][0]).size
        centre = {
            g["text"]: ((g["box"][0] + g["box"][2]) / 2, (g["box"][1] + g["box"][3]) / 2)
            for g in r["regions"][0]
        }
        question = r["messages"][0]["content"][1]["text"]
        a, b = sorted(centre, key=question.find)
        if question.startswith("Relative to"):
            a, b = b, a
        offset = {
            "x": (centre[a][0] - centre[b][0]) * width,
            "y": (centre[a][1] - centre[b][1]) * height,
        }

        def holds(word, slack=6.0):
            axis, sign = words[word]
            return sign * offset[axis] > -slack

        def dominant(word):
            axis = words[word][0]
            other = "x" if axis == "y" else "y"
            return holds(word) and abs(offset[axis]) >= abs(offset[other]) - 6

        if r["answer"] in ("yes", "no"):
            asked = next(w for w in words if f" {w} " in question)
            assert dominant(asked) if r["answer"] == "yes" else not holds(asked, -6), question
        else:
            assert dominant(r["answer"]), (question, r["answer"], offset)
        kinds[r["answer"] if r["answer"] in ("yes", "no") else "open"] += 1
    assert min(kinds.values()) > 20, kinds
