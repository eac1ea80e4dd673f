"""benchmarks/text_probe.py: the linear probe reads a separable target and not a random one;
fine-tuning trains the encoder and leaves its BatchNorm statistics alone."""

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


def test_finetune_lowers_the_loss_and_trains_the_encoder(text_probe, tmp_path, monkeypatch):
    from mmllm.data.generate import make_dataset
    from mmllm.encoders import build_encoder

    make_dataset(tmp_path, 40, seed=3, split="train", tasks=["text"], progress=False)
    built = []

    def keep(*args, **kwargs):
        built.append(build_encoder(*args, **kwargs))
        return built[-1]

    monkeypatch.setattr(text_probe, "build_encoder", keep)
    reference = build_encoder(text_probe.ENCODER, image_size=64)
    torch.manual_seed(0)
    history = text_probe.finetune_word_probe(tmp_path, 64, epochs=3, lr=1e-3, batch=8)
    assert len(history) == 3 and all(0 <= h["accuracy"] <= 1 for h in history)
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    tuned, frozen = dict(built[0].named_parameters()), dict(reference.named_parameters())
    trainable = set(reference.trainable_state_names())
    assert any(not torch.equal(tuned[n], frozen[n]) for n in trainable)
    assert all(torch.equal(tuned[n], frozen[n]) for n in frozen if n not in trainable)
    buffers = dict(reference.named_buffers())
    assert all(torch.equal(b, buffers[n]) for n, b in built[0].named_buffers())


def test_encoder_weights_load_a_checkpoint_encoder_and_refuse_another(text_probe, tmp_path):
    from safetensors.torch import save_file

    encoder = text_probe.load_encoder(64)
    name = encoder.trainable_state_names()[0]
    state = {name: torch.full_like(dict(encoder.named_parameters())[name], 0.5)}
    save_file(state, tmp_path / "encoder.safetensors")
    loaded = dict(text_probe.load_encoder(64, tmp_path / "encoder.safetensors").named_parameters())
    assert torch.equal(loaded[name], state[name])
    save_file({"not.a.weight": torch.zeros(2)}, tmp_path / "other.safetensors")
    with pytest.raises(SystemExit, match="unexpected"):
        text_probe.load_encoder(64, tmp_path / "other.safetensors")
