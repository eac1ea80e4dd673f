"""Tokenizer recipes at smoke size through the CLI; schema errors; the report it writes."""

import json

import pytest
import torch

from mmllm import recipes
from mmllm.cli import main
from mmllm.data.generate import make_dataset
from mmllm.errors import MMLLMError
from mmllm.recipe import TokenizerRecipe, load_recipe
from mmllm.vision_tokenizers.discrete import DiscreteTokenizer

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("tok-data")
    make_dataset(root, 8, seed=3, split="train", progress=False)
    return root


@pytest.mark.parametrize("name", [n for n in recipes.available() if n.startswith("tokenizer")])
def test_tokenizer_recipe_runs_at_smoke_size(name, images, tmp_path):
    with pytest.raises(SystemExit) as code:
        main(
            [
                "train",
                name,
                "--smoke",
                "--data",
                str(images),
                "--eval-data",
                str(images),
                "--output",
                str(tmp_path),
            ]
        )
    assert code.value.code in (0, None)
    final = tmp_path / "final"
    tokenizer = DiscreteTokenizer.from_pretrained(final)
    metrics = json.loads((final / "metrics.json").read_text())
    assert metrics["n"] == 8 and metrics["psnr"] > 0 and 0 < metrics["codebook_usage"] <= 1
    assert (final / "reconstructions.png").is_file()
    ids = tokenizer.encode(tokenizer.preprocess(sorted(images.rglob("*.png"))[:2])).ids
    assert tokenizer.decode(ids).shape[-1] == tokenizer.config.image_size
    if tokenizer.centres_pixels:  # fitted on the training images before the first step
        mean = tokenizer.preprocess(sorted(images.rglob("*.png"))).mean(0, keepdim=True)
        torch.testing.assert_close(tokenizer.pixel_mean, mean)


def test_tokenizer_recipe_schema_errors(tmp_path):
    recipe = load_recipe("tokenizer_conv2d")
    assert isinstance(recipe, TokenizerRecipe)
    with pytest.raises(MMLLMError, match=r"tokenizer\.kind"):
        load_recipe("tokenizer_conv2d", {"tokenizer.kind": "vae"})
    with pytest.raises(MMLLMError, match=r"losses\.perturb"):
        load_recipe("tokenizer_conv2d", {"losses.perturb": 2})
    with pytest.raises(MMLLMError, match="does not exist"):
        load_recipe("tokenizer_conv2d", {"data.train": str(tmp_path / "nope")}).check_paths()
