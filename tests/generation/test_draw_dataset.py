"""make-draw folders: held-out combinations stay out of training; rows round-trip; bad rows."""

import random

import pytest

from mmllm.errors import MMLLMError
from mmllm.generation.dataset import load_draw_dataset, make_draw_dataset
from mmllm.generation.prompts import HELDOUT_PAIRS, DrawSpec, prompt_text, sample_spec


def test_train_split_never_names_a_heldout_combination(tmp_path):
    make_draw_dataset(tmp_path / "train", 200, seed=1, split="train")
    samples = load_draw_dataset(tmp_path / "train")
    assert len(samples) == 200
    assert not any(s.spec.uses_heldout() for s in samples)
    assert all(s.image.is_file() and s.prompt == prompt_text(s.spec) for s in samples)


def test_test_split_is_half_heldout(tmp_path):
    make_draw_dataset(tmp_path / "test", 40, seed=1, split="test")
    flags = [s.spec.uses_heldout() for s in load_draw_dataset(tmp_path / "test")]
    assert sum(flags) == 20


def test_same_seed_same_prompts(tmp_path):
    a = make_draw_dataset(tmp_path / "a", 30, seed=4)
    b = make_draw_dataset(tmp_path / "b", 30, seed=4)
    assert a.read_text() == b.read_text()


def test_prompt_texts():
    assert prompt_text(DrawSpec("single", [("red", "circle")])) == "a red circle"
    assert prompt_text(DrawSpec("count", [("blue", "cross")], count=3)) == "three blue crosses"
    pair = DrawSpec("pair", [("red", "star"), ("pink", "square")], relation="above")
    assert prompt_text(pair) == "a red star above a pink square"
    assert len(HELDOUT_PAIRS) == 8
    rng = random.Random(0)
    assert all(sample_spec(rng, heldout=True).uses_heldout() for _ in range(20))


def test_bad_rows_and_folders(tmp_path):
    with pytest.raises(MMLLMError, match="make-draw"):
        load_draw_dataset(tmp_path)
    (tmp_path / "draw.jsonl").write_text('{"prompt": "a red circle"}\n')
    with pytest.raises(MMLLMError, match=r"draw\.jsonl:1: malformed"):
        load_draw_dataset(tmp_path)
    with pytest.raises(MMLLMError, match="split"):
        make_draw_dataset(tmp_path, 2, split="val")
