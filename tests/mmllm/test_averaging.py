"""mmllm.averaging: checkpoint averages are exact where promised (LoRA updates by stacking the
factors), the truncated form is the best rank-k approximation, and mismatches are refused."""

import json

import pytest
import torch
from peft import LoraConfig, get_peft_model

from mmllm.averaging import average_checkpoints, average_lora
from mmllm.errors import MMLLMError
from mmllm.modeling import MMLLMForConditionalGeneration

KEY_A = "base_model.model.layers.0.q_proj.lora_A.weight"
KEY_B = "base_model.model.layers.0.q_proj.lora_B.weight"


def lora_state(seed: int, r: int = 4, d_in: int = 12, d_out: int = 10) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {KEY_A: torch.randn(r, d_in, generator=g), KEY_B: torch.randn(d_out, r, generator=g)}


def update(state: dict, config: dict) -> torch.Tensor:
    """A plain LoRA update: scaling * B @ A."""
    return config["lora_alpha"] / config["r"] * state[KEY_B].double() @ state[KEY_A].double()


def test_stacked_factors_give_the_weighted_mean_of_the_updates():
    config = {"r": 4, "lora_alpha": 8}
    states = [lora_state(0), lora_state(1), lora_state(2)]
    weights = [0.2, 0.3, 0.5]
    out, new_config, error = average_lora(states, config, weights, ["a", "b", "c"])
    expected = sum(w * update(s, config) for w, s in zip(weights, states, strict=True))
    assert new_config["r"] == 12 and error == 0.0
    torch.testing.assert_close(update(out, new_config), expected, rtol=1e-5, atol=1e-5)


def test_truncation_is_the_best_rank_k_approximation():
    config = {"r": 4, "lora_alpha": 8}
    states = [lora_state(0), lora_state(1)]
    out, new_config, error = average_lora(states, config, [0.5, 0.5], ["a", "b"], rank=3)
    full = 0.5 * (update(states[0], config) + update(states[1], config))
    u, s, vh = torch.linalg.svd(full)
    best = (u[:, :3] * s[:3]) @ vh[:3]
    assert new_config["r"] == 3 and out[KEY_A].shape == (3, 12) and out[KEY_B].shape == (10, 3)
    torch.testing.assert_close(update(out, new_config), best, rtol=1e-4, atol=1e-4)
    assert error == pytest.approx(float(s[3:].square().sum().sqrt() / s.square().sum().sqrt()))


def test_rslora_keeps_its_scaling():
    config = {"r": 4, "lora_alpha": 8, "use_rslora": True}
    states = [lora_state(0), lora_state(1)]
    out, new_config, _ = average_lora(states, config, [0.5, 0.5], ["a", "b"])

    def rs_update(state, cfg):
        return cfg["lora_alpha"] / cfg["r"] ** 0.5 * state[KEY_B].double() @ state[KEY_A].double()

    expected = 0.5 * (rs_update(states[0], config) + rs_update(states[1], config))
    torch.testing.assert_close(rs_update(out, new_config), expected, rtol=1e-5, atol=1e-5)


def test_dora_is_refused():
    with pytest.raises(MMLLMError, match="DoRA"):
        average_lora([lora_state(0), lora_state(1)], {"r": 4, "lora_alpha": 8, "use_dora": True},
                     [0.5, 0.5], ["a", "b"])  # fmt: skip


def save_tiny(tiny, folder, seed):
    """A tiny model with a LoRA that changes the function, saved like a training run's final."""
    torch.manual_seed(seed)
    model = tiny.model()
    torch.nn.init.normal_(model.adapter.net[0].weight)
    model.llm = get_peft_model(model.llm, LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    for name, p in model.llm.named_parameters():
        if "lora_" in name:
            torch.nn.init.normal_(p, std=0.5)
    model.save_pretrained(folder)
    return folder


def load_merged(tiny, folder):
    llm, tok = tiny.llm("llama")
    return MMLLMForConditionalGeneration.from_pretrained(
        folder, encoder=tiny.encoder(), llm=llm, tokenizer=tok, merge_lora=True
    )


def test_averaged_checkpoint_loads_as_the_mean_model(tmp_path, tiny):
    """The average loads like any checkpoint; its adapter and merged LLM weights are the weighted
    means of the sources' (exact LoRA average)."""
    a = save_tiny(tiny, tmp_path / "a", 0)
    b = save_tiny(tiny, tmp_path / "b", 1)
    out = average_checkpoints([a, b], tmp_path / "avg", weights=[1, 3])
    provenance = json.loads((out / "averaged_from.json").read_text())
    assert provenance["weights"] == [0.25, 0.75] and provenance["lora_rank"] == 8
    models = [load_merged(tiny, f) for f in (a, b, out)]
    params = [dict(m.named_parameters()) for m in models]
    for name in ("adapter.net.0.weight", "llm.model.layers.0.self_attn.q_proj.weight"):
        expected = 0.25 * params[0][name] + 0.75 * params[1][name]
        torch.testing.assert_close(params[2][name], expected, rtol=1e-5, atol=1e-5)


def test_an_average_of_averages_records_its_members(tmp_path, tiny):
    """An averaged source is named by its members' recipes (its recipe.yaml is its first
    member's) and its own provenance is kept, so the record goes back to trained runs."""
    a = save_tiny(tiny, tmp_path / "a", 0)
    b = save_tiny(tiny, tmp_path / "b", 1)
    c = save_tiny(tiny, tmp_path / "c", 2)
    for folder, name in ((a, "stage_a"), (b, "stage_b"), (c, "stage_c")):
        (folder / "recipe.yaml").write_text(f"name: {name}\n")
    first = average_checkpoints([a, b], tmp_path / "first", rank=4)
    second = average_checkpoints([first, c], tmp_path / "second")
    provenance = json.loads((second / "averaged_from.json").read_text())
    assert provenance["recipes"] == ["average(stage_a, stage_b)", "stage_c"]
    assert provenance["averaged_members"]["0"]["recipes"] == ["stage_a", "stage_b"]
    assert "1" not in provenance["averaged_members"]


def test_mismatches_and_bad_arguments_are_refused(tmp_path, tiny):
    a = save_tiny(tiny, tmp_path / "a", 0)
    b = save_tiny(tiny, tmp_path / "b", 1)
    with pytest.raises(MMLLMError, match="at least two"):
        average_checkpoints([a], tmp_path / "x")
    with pytest.raises(MMLLMError, match="2 weights given for 3"):
        average_checkpoints([a, b, a], tmp_path / "x", weights=[1, 1])
    with pytest.raises(MMLLMError, match="not a trained model folder"):
        average_checkpoints([a, tmp_path / "missing"], tmp_path / "x")
    config = json.loads((b / "config.json").read_text())
    (b / "config.json").write_text(json.dumps(dict(config, adapter="resampler")))
    with pytest.raises(MMLLMError, match=r"config\.adapter"):
        average_checkpoints([a, b], tmp_path / "x")
    (b / "config.json").write_text(json.dumps(config))
    torch.save({}, b / "optimizer.pt")
    with pytest.raises(MMLLMError, match="pickled"):
        average_checkpoints([a, b], tmp_path / "x")
    (b / "optimizer.pt").unlink()
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("x")
    with pytest.raises(MMLLMError, match="not empty"):
        average_checkpoints([a, b], tmp_path / "full")


def test_command_line(tmp_path, tiny, capsys):
    from mmllm.cli import main

    a = save_tiny(tiny, tmp_path / "a", 0)
    b = save_tiny(tiny, tmp_path / "b", 1)
    with pytest.raises(SystemExit) as done:
        main(["average", str(a), str(b), "--out", str(tmp_path / "avg"), "--rank", "4"])
    assert done.value.code in (0, None)
    assert "averaged checkpoint" in capsys.readouterr().out
    assert json.loads((tmp_path / "avg" / "lora" / "adapter_config.json").read_text())["r"] == 4
    with pytest.raises(SystemExit) as done:
        main(["average", str(a), str(b), "--out", str(tmp_path / "avg2"), "--weights", "1,x"])
    assert done.value.code == 2 and "--weights" in capsys.readouterr().err
    with pytest.raises(SystemExit) as done:
        main(["average", str(a), "--out", str(tmp_path / "avg3")])
    assert done.value.code == 1 and "at least two" in capsys.readouterr().err


def test_a_refused_lora_leaves_no_output(tmp_path, tiny):
    a = save_tiny(tiny, tmp_path / "a", 0)
    b = save_tiny(tiny, tmp_path / "b", 1)
    for folder in (a, b):
        path = folder / "lora" / "adapter_config.json"
        path.write_text(json.dumps(dict(json.loads(path.read_text()), use_dora=True)))
    with pytest.raises(MMLLMError, match="DoRA"):
        average_checkpoints([a, b], tmp_path / "avg")
    assert not (tmp_path / "avg").exists()
