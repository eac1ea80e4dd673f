"""Every bundled recipe at its smoke size on CPU, resume, merge, eval and chat on the result."""

import json
import shutil

import pytest
import torch

from mmllm import recipes
from mmllm.cli import main
from mmllm.data.generate import make_dataset
from mmllm.errors import MMLLMError
from mmllm.recipe import load_recipe
from mmllm.train import train

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("smoke-data")
    make_dataset(root / "train", 12, seed=1, split="train", progress=False)
    make_dataset(root / "val", 6, seed=1, split="val", progress=False)
    make_dataset(root / "train_dense", 12, seed=1, split="train", progress=False, dense=True)
    return root


def smoke(name, data, out, **extra):
    overrides = {
        "data.train": str(data / "train"),
        "data.eval": str(data / "val"),
        "train.output_dir": str(out),
        **extra,
    }
    return train(load_recipe(name, overrides), smoke=True)


@pytest.fixture(scope="module")
def stage2(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    stage1 = smoke("default_stage1", data, out / "s1")
    return smoke("default_stage2", data, out / "s2", **{"model.init_from": str(stage1)})


@pytest.mark.parametrize(
    "name",
    [
        n
        for n in recipes.available()
        if not n.startswith(("default", "discrete", "qlora", "tokenizer", "generator"))
    ],
)
def test_recipe_runs_at_smoke_size(name, data, tmp_path):
    final = smoke(name, data, tmp_path)
    assert (final / "adapter.safetensors").is_file()
    assert (tmp_path / "loss.png").is_file()
    history = json.loads((tmp_path / "log_history.json").read_text())
    assert any("loss" in h for h in history) and any("eval_loss" in h for h in history)


def test_default_stages_save_adapter_and_lora_together(stage2):
    assert (stage2 / "adapter.safetensors").is_file()
    assert (stage2 / "lora" / "adapter_model.safetensors").is_file()
    assert not list(stage2.rglob("*.bin"))


@pytest.mark.parametrize(
    "name",
    [
        "default_stage3",
        "default_stage4",
        "default_stage5",
        "default_stage6",
        "default_stage7",
        "default_stage9",
        "default_budgets",
    ],
)
def test_continuation_stages_run_at_smoke_size(name, stage2, data, tmp_path):
    """Stages 3-7 continue a stage-2 checkpoint (4-7 on the wider detail encoder; 6 also
    fine-tunes the encoder; 7 trains on dense multi-turn rows)."""
    extra = {"model.init_from": str(stage2)}
    if load_recipe(name).data.train.name == "train_dense":
        extra["data.train"] = str(data / "train_dense")
    final = smoke(name, data, tmp_path, **extra)
    config = json.loads((final / "config.json").read_text())
    assert config["encoder"] == load_recipe(name).model.encoder
    assert (final / "encoder.safetensors").is_file() == (name == "default_stage6")
    assert config["reduction"] == "identity"  # budgets drawn in training leave the config alone


def test_discrete_stages_chain(data, tmp_path):
    """Understanding from discrete ids: stage 1 trains the vocabulary rows on the shipped image
    tokenizer, stage 2 continues it with LoRA; the checkpoint names the tokenizer portably."""
    stage1 = smoke("discrete_stage1", data, tmp_path / "s1")
    stage2 = smoke("discrete_stage2", data, tmp_path / "s2", **{"model.init_from": str(stage1)})
    assert (stage2 / "lora" / "adapter_model.safetensors").is_file()
    config = json.loads((stage2 / "config.json").read_text())
    assert config["encoder"] == "tokenizer:default" and config["adapter"] == "vocab_rows"


def test_qlora_needs_a_gpu(data, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("has a GPU")
    with pytest.raises(MMLLMError, match=r"QLoRA .* needs a CUDA GPU"):
        smoke("qlora", data, tmp_path)


def test_lora_targets_that_match_nothing(data, tmp_path, stage2):
    with pytest.raises(MMLLMError, match=r"match no module.*q_proj"):
        smoke(
            "default_stage2",
            data,
            tmp_path,
            **{"lora.target_modules": ["query_key_value"], "model.init_from": None},
        )


def test_encoder_lr_fine_tunes_the_encoder_and_resumes(data, tmp_path):
    """train.encoder_lr trains the EfficientNet weights (not its classifier); they are saved
    with the checkpoint, loaded back by from_pretrained and by a resumed run."""
    from safetensors.torch import load_file, save_file

    from mmllm.modeling import MMLLMForConditionalGeneration
    from mmllm.vision_tokenizers.encoders.efficientnet import efficientnet_lite0_state_dict

    final = smoke("default_stage1", data, tmp_path, **{"train.encoder_lr": 1e-2})
    tuned = load_file(final / "encoder.safetensors")
    base = efficientnet_lite0_state_dict()
    assert "net._fc.weight" not in tuned
    assert not torch.equal(tuned["net._conv_head.weight"], base["_conv_head.weight"])
    model = MMLLMForConditionalGeneration.from_pretrained(final)
    assert torch.equal(model.encoder.net._conv_head.weight, tuned["net._conv_head.weight"])

    # a resumed run continues from the checkpoint's encoder, not the package's: mark it
    shutil.rmtree(final)
    saved = tmp_path / "checkpoint-2" / "encoder.safetensors"
    state = load_file(saved)
    state["net._conv_head.weight"] = torch.zeros_like(state["net._conv_head.weight"])
    save_file(state, saved)
    recipe = load_recipe(
        "default_stage1",
        {
            "data.train": str(data / "train"),
            "data.eval": str(data / "val"),
            "train.output_dir": str(tmp_path),
            "train.encoder_lr": 1e-3,
        },
    )
    recipe.smoke.max_steps = 3
    resumed = train(recipe, smoke=True, resume=True)
    head = load_file(resumed / "encoder.safetensors")["net._conv_head.weight"]
    assert head.abs().max() < 0.01 < base["_conv_head.weight"].abs().max()


def test_resume_continues_from_last_checkpoint(data, tmp_path):
    smoke("default_stage1", data, tmp_path)
    shutil.rmtree(tmp_path / "final")
    recipe = load_recipe(
        "default_stage1",
        {
            "data.train": str(data / "train"),
            "data.eval": str(data / "val"),
            "train.output_dir": str(tmp_path),
        },
    )
    recipe.smoke.max_steps = 3
    train(recipe, smoke=True, resume=True)
    state = json.loads((tmp_path / "checkpoint-3" / "trainer_state.json").read_text())
    assert state["global_step"] == 3 and (tmp_path / "checkpoint-2").is_dir()


def test_eval_json_chat_and_merge(stage2, data, tmp_path, capsys):
    with pytest.raises(SystemExit) as code:
        main(
            [
                "eval",
                "--model",
                str(stage2),
                "--data",
                str(data / "val"),
                "--limit",
                "4",
                "--reduction",
                "identity",
                "--reduction",
                "pool:2x2",
                "--json",
                "--plot",
                str(tmp_path / "p.png"),
            ]
        )
    assert code.value.code in (0, None)
    out = json.loads(capsys.readouterr().out)
    assert [r["reduction"] for r in out["results"]] == ["identity", "pool:2x2"]
    first = out["results"][0]
    assert set(first) == {
        "reduction",
        "overall",
        "per_task",
        "n",
        "visual_tokens",
        "prefill_ms",
        "total_ms",
        "prompt_tokens",
        "vision_ms",
    }
    assert first["prompt_tokens"] > first["visual_tokens"] and first["vision_ms"] > 0
    assert first["n"] == 4 and 0 <= first["overall"] <= 1
    assert out["results"][1]["visual_tokens"] < first["visual_tokens"]
    assert (tmp_path / "p.png").is_file()

    with pytest.raises(SystemExit) as code:
        main(
            [
                *("eval", "--model", str(stage2), "--data", str(data / "val"), "--limit", "4"),
                *("--nll", "--json", "--plot", str(tmp_path / "q.png")),
            ]
        )
    assert code.value.code in (0, None)
    scored = json.loads(capsys.readouterr().out)
    assert scored["answer_nll"] > 0 and set(scored["per_task_nll"]) == set(scored["per_task"])

    image = next((data / "val" / "images").iterdir())
    with pytest.raises(SystemExit) as code:
        main(
            [
                "chat",
                "--model",
                str(stage2),
                "--image",
                str(image),
                "What colour is it?",
                "--max-new-tokens",
                "4",
            ]
        )
    assert code.value.code in (0, None)

    merged = tmp_path / "merged"
    with pytest.raises(SystemExit) as code:
        main(["merge", str(stage2), "--out", str(merged)])
    assert code.value.code in (0, None)
    assert (merged / "llm" / "model.safetensors").is_file() and not (merged / "lora").exists()
    from mmllm.default_model import load_model

    a, b = load_model(stage2), load_model(merged)
    from mmllm.data.dataset import load_dataset
    from mmllm.processor import MMLLMProcessor

    sample = load_dataset(data / "val")[0]
    inputs = MMLLMProcessor.from_model(a)([sample.prompt_messages()], [sample.images])
    torch.testing.assert_close(a(**inputs).logits, b(**inputs).logits, rtol=1e-4, atol=1e-4)


def test_reduction_budgets_draw_a_reducer_per_training_batch(data, tiny):
    from mmllm.data.dataset import load_dataset
    from mmllm.processor import MMLLMProcessor
    from mmllm.train import Collator

    model = tiny.model()
    torch.nn.init.normal_(model.adapter.net[0].weight)
    processor = MMLLMProcessor.from_model(model)
    samples = load_dataset(data / "train")[:2]
    budgets = ["identity", "pool:2x2", "random:3", "focus:3"]  # focus reads the prompt
    collate = Collator(processor, model, seed=0, budgets=budgets)
    drawn = set()
    for _ in range(16):
        batch = collate(samples)
        spec = batch["reduction"]
        drawn.add(spec)
        slots = (batch["input_ids"] == model.image_token_id).sum(1)
        assert slots.tolist() == [model.num_image_tokens(reduction=spec)] * 2
        assert torch.isfinite(model(**batch).loss)
    assert drawn == set(budgets)
    assert model.config.reduction == "identity" and model.num_image_tokens() == 16

    # the per-batch override is the same model as one configured with that reducer
    batch = collate(samples)
    while batch["reduction"] != "pool:2x2":
        batch = collate(samples)
    with torch.no_grad():
        overridden = model(**batch).loss
        model.set_reduction("pool:2x2")
        configured = model(**{k: v for k, v in batch.items() if k != "reduction"}).loss
    torch.testing.assert_close(overridden, configured)
    model.set_reduction("identity")

    evaluation = Collator(processor, model, seed=0, budgets=budgets, train=False)(samples)
    assert "reduction" not in evaluation
    assert int((evaluation["input_ids"] == model.image_token_id).sum()) == 2 * 16


def test_reduction_budgets_are_validated():
    for bad, message in (
        (["fastv:layer=2,keep=5"], "inside the LLM"),
        (["nosuch:3"], "unknown reducer"),
        ([], "at least 1"),
    ):
        with pytest.raises(MMLLMError, match=message):
            load_recipe("default_budgets", {"train.reduction_budgets": bad})
    with pytest.raises(MMLLMError, match="use one"):
        load_recipe("tokenflex", {"train.reduction_budgets": ["coverage:5"]})
