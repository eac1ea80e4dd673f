"""benchmarks/text_probe.py: the linear probe reads a separable target and not a random one."""

import pytest
import torch


@pytest.fixture(scope="module")
def text_probe(load_script):
    return load_script("text_probe")


def test_probe_reads_a_linear_target_and_reports_chance(text_probe):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(400, 16, generator=g)
    labels = ["a" if v > 0 else "b" for v in x[:, 3].tolist()]
    result = text_probe.probe(x, labels)
    assert result["accuracy"] > 0.95 and result["classes"] == 2 and result["n"] == 400
    assert 0.5 <= result["chance"] < 0.75


def test_probe_is_near_chance_on_random_labels(text_probe):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(400, 16, generator=g)
    labels = [str(v) for v in torch.randint(0, 4, (400,), generator=g).tolist()]
    assert text_probe.probe(x, labels)["accuracy"] < 0.45


def test_targets_pick_words_and_numbers(text_probe):
    keep, label = text_probe.TARGETS["first digit (4-digit numbers)"]
    assert keep("4426") and not keep("426") and not keep("cat") and label("4426") == "4"
    keep, label = text_probe.TARGETS["word"]
    assert keep("cat") and not keep("12")
