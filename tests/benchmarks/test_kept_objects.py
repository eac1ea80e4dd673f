"""benchmarks/kept_objects.py: the needed objects per task, and the kept-object counts against
a plain count from the generator's boxes."""

import pytest
import torch

from mmllm.data.dataset import Sample, load_dataset
from mmllm.data.generate import make_dataset
from mmllm.grounding import assign_cells, object_regions


@pytest.fixture(scope="module")
def kept(load_script):
    return load_script("kept_objects")


def regions():
    return [
        {"box": [0.0, 0.0, 0.5, 0.5], "text": "red circle"},
        {"box": [0.6, 0.6, 0.7, 0.7], "text": "blue star"},
        {"box": [0.1, 0.6, 0.4, 0.9], "text": "teal square"},
    ]


def sample(task: str, question: str) -> Sample:
    user = {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}
    return Sample(messages=[user], images=[], answer="x", task=task, regions=[regions()])


def test_needed_objects_per_task(kept):
    relation = sample("relation", "Is the red circle left of the teal square?")
    assert kept.needed_objects(relation, regions()) == [0, 2]
    small = sample("small_object", "What colour is the small star?")
    small.answer = "blue"
    assert kept.needed_objects(small, regions()) == [1]
    small = sample("small_object", "Which small shape is teal?")
    small.answer = "square"
    assert kept.needed_objects(small, regions()) == [2]
    assert kept.needed_objects(sample("count", "How many stars?"), regions()) == [1]
    assert kept.needed_objects(sample("count", "Give the count of circles."), regions()) == [0]
    assert kept.needed_objects(sample("caption", "Write a caption."), regions()) == [0, 1, 2]
    with pytest.raises(ValueError, match="no needed objects"):
        kept.needed_objects(sample("colour", "What colour is the star?"), regions())


def test_full_tokens_keep_every_object_that_owns_a_cell(kept, tiny, tmp_path):
    """With all tokens kept, an object counts as kept exactly when it owns a cell of the grid
    (on the tiny model's 4 x 4 grid two objects can share their centre cell); one kept token
    shows at most one object and one background cell."""
    make_dataset(tmp_path, 18, seed=4, split="val", progress=False)
    samples = [s for s in load_dataset(tmp_path) if s.task in ("count", "relation", "caption")]
    model = tiny.model("llama")
    grid = model.encoder.grid
    report = kept.kept_objects(model, samples, "identity")
    assert "_encode" not in vars(model)  # the recording wrapper is gone again
    owned, background = {}, {}  # plain reference from the generator's boxes
    for s in samples:
        found = object_regions(s.regions[0])
        owner = assign_cells(torch.tensor([r["box"] for r in found]).view(-1, 4), grid, 0.3)
        needed = kept.needed_objects(s, found)
        owned.setdefault(s.task, []).append(all(bool((owner == i).any()) for i in needed))
        background.setdefault(s.task, []).append(int((owner < 0).sum()))
    assert set(report) == set(owned)
    for task, r in report.items():
        assert r["needed_objects_kept"] == pytest.approx(sum(owned[task]) / len(owned[task]))
        assert r["background_cells_per_image"] == pytest.approx(
            sum(background[task]) / len(background[task])
        )
    one = kept.kept_objects(model, samples, "random:1")
    assert all(r["background_cells_per_image"] <= 1 for r in one.values())
    captions = [s for s in samples if s.task == "caption"]
    several = [s for s in captions if len(object_regions(s.regions[0])) > 1]
    if several:  # one cell cannot show two objects
        assert one["caption"]["needed_objects_kept"] <= 1 - len(several) / len(captions)
