import pytest

from mmllm import recipes
from mmllm.errors import MMLLMError
from mmllm.recipe import load_recipe


def test_bundled_recipes_validate():
    names = recipes.available()
    assert {
        "default_stage1",
        "default_stage2",
        "pixel_shuffle",
        "resampler",
        "tokenflex",
        "qlora",
    } <= set(names)
    for name in names:
        recipe = load_recipe(name)
        assert recipe.name == name and recipe.smoke.max_steps > 0


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "name: x\ndata: {train: d}\ntrain: {output_dir: o, colour: red}\n",
            "train.colour: Extra inputs",
        ),
        (
            "name: x\ndata: {train: d}\ntrain: {output_dir: o, batch_size: many}\n",
            "train.batch_size",
        ),
        ("name: x\ndata: {train: d}\n", "train: Field required"),
        ("name: x\ndata: {train: d}\ntrain: {output_dir: o, stage: 2}\n", "add a 'lora' section"),
        ("name: x\ndata: {train: d}\ntrain: {output_dir: o, stage: 3}\n", "train.stage"),
        ("name: [unclosed\n", "not valid YAML"),
        ("- a list\n", "YAML mapping"),
    ],
)
def test_malformed_recipes(tmp_path, text, message):
    path = tmp_path / "r.yaml"
    path.write_text(text)
    with pytest.raises(MMLLMError, match=message):
        load_recipe(path)


def test_missing_data_is_named(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(f"name: x\ndata: {{train: {tmp_path}/nope}}\ntrain: {{output_dir: o}}\n")
    with pytest.raises(MMLLMError, match=r"data\.train = .*nope does not exist.*mmllm data make"):
        load_recipe(path).check_paths()


def test_unknown_recipe_lists_bundled_ones():
    with pytest.raises(MMLLMError, match="default_stage1"):
        load_recipe("no_such_recipe")


def test_overrides_set_dotted_keys():
    recipe = load_recipe(
        "default_stage1", {"train.output_dir": "/tmp/elsewhere", "data.train": "/x"}
    )
    assert str(recipe.train.output_dir) == "/tmp/elsewhere" and str(recipe.data.train) == "/x"
