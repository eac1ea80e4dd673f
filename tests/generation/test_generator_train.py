"""The generator recipe at smoke size (tiny LLM + tiny tokenizer) through the CLI, then
``mmllm generate`` and a chat drawing request on what it saved."""

import json

import pytest
from PIL import Image

from mmllm import recipes
from mmllm.cli import main
from mmllm.errors import MMLLMError
from mmllm.generation.dataset import make_draw_dataset
from mmllm.generation.model import ImageGenerator
from mmllm.recipe import GeneratorRecipe, load_recipe

pytestmark = pytest.mark.slow


def run(args):
    with pytest.raises(SystemExit) as code:
        main(args)
    assert code.value.code in (0, None)


def test_recipe_trains_saves_generates_and_draws_in_chat(
    tiny, image_tokenizer, tmp_path, monkeypatch
):
    llm, tok = tiny.llm("llama")
    llm.save_pretrained(tmp_path / "llm")
    tok.save_pretrained(tmp_path / "llm")
    image_tokenizer.save_pretrained(tmp_path / "tok")
    make_draw_dataset(tmp_path / "data", 8, seed=1)
    make_draw_dataset(tmp_path / "test", 4, seed=1, split="test")
    run(
        [
            "train",
            "generator_draw",
            "--smoke",
            "--data",
            str(tmp_path / "data"),
            "--eval-data",
            str(tmp_path / "test"),
            "--output",
            str(tmp_path / "run"),
            "--set",
            f"generator.image_tokenizer={tmp_path / 'tok'}",
            "--set",
            f"generator.llm={tmp_path / 'llm'}",
            "--set",
            "lora.target_modules=[q_proj, v_proj]",
        ]
    )
    final = tmp_path / "run" / "final"
    report = json.loads((final / "metrics.json").read_text())
    assert set(report) >= {"generated", "ceiling", "chance", "overall"}
    assert (final / "samples.png").is_file() and (final / "lora").is_dir()
    assert (tmp_path / "run" / "loss.png").is_file()
    generator = ImageGenerator.from_pretrained(final)
    assert hasattr(generator.llm, "peft_config")

    out = tmp_path / "img.png"
    run(["generate", "a red circle", "--model", str(final), "--out", str(out), "--n", "2"])
    assert Image.open(tmp_path / "img_0.png").size == (256, 256)

    # chat hands drawing requests to the (here: patched) default generator
    monkeypatch.setattr("mmllm.default_model.default_generator_path", lambda: final, raising=True)
    run(["chat", "Draw two blue stars", "--save-dir", str(tmp_path / "chat")])
    assert (tmp_path / "chat" / "mmllm_image_0.png").is_file()


def test_generator_recipe_schema_errors(tmp_path):
    recipe = load_recipe(recipes.path("generator_draw"))
    assert isinstance(recipe, GeneratorRecipe)
    with pytest.raises(MMLLMError, match=r"generator\.cfg_dropout"):
        load_recipe(recipes.path("generator_draw"), {"generator.cfg_dropout": 1.5})
    with pytest.raises(MMLLMError, match="unknown_key"):
        load_recipe(recipes.path("generator_draw"), {"generator.unknown_key": 1})
    # Data folders exist (so only the tokenizer path is wrong), whatever this checkout holds.
    (tmp_path / "train").mkdir()
    (tmp_path / "eval").mkdir()
    missing = load_recipe(
        recipes.path("generator_draw"),
        {
            "generator.image_tokenizer": str(tmp_path / "nope"),
            "data.train": str(tmp_path / "train"),
            "data.eval": str(tmp_path / "eval"),
        },
    )
    with pytest.raises(MMLLMError, match="tokenizer_draw"):
        missing.check_paths()


def test_bad_set_override():
    with pytest.raises(SystemExit) as code:
        main(["train", "generator_draw", "--smoke", "--set", "nonsense"])
    assert code.value.code == 1
