"""The reading stage: text regions in generated rows, their cells trained onto the words they
show through the encoder, every other cell held where the model had it."""

import json

import pytest
import torch
from PIL import Image

from mmllm.data.dataset import Sample
from mmllm.errors import MMLLMError
from mmllm.grounding import BACKGROUND, assign_cells, phrase_list
from mmllm.reading import (
    ReadingObjective,
    build_reading_data,
    reading_phrase,
    reading_phrases,
)


def test_reading_phrase_spells_numbers_as_digits():
    assert reading_phrase("4821") == "4 8 2 1"
    assert reading_phrase(" Apple ") == "apple"
    assert reading_phrase("0") == "0"


def test_text_box_is_the_rendered_ink(tmp_path):
    """The region box equals the bounding box of the pixels the text changed (plain
    reference: render the scene with and without its text and diff)."""
    from mmllm.data.scenes import Scene, Text, render

    for value, x, y, height in [("APPLE", 0.5, 0.5, 0.15), ("4821", 0.4, 0.3, 0.08)]:
        scene = Scene(224, 224, "plain", (255, 255, 255))
        blank = torch.tensor(list(render(scene).getdata())).view(224, 224, 3)
        scene.text = Text(value, x, y, height, "black")
        inked = torch.tensor(list(render(scene).getdata())).view(224, 224, 3)
        ys, xs = torch.nonzero((inked != blank).any(-1), as_tuple=True)
        ink = [xs.min() / 224, ys.min() / 224, (xs.max() + 1) / 224, (ys.max() + 1) / 224]
        box = scene.text.box(224, 224)
        assert all(abs(a - float(b)) <= 2 / 224 for a, b in zip(box, ink, strict=True))


def test_generated_text_rows_carry_a_text_region_that_stage_zero_leaves_out(tmp_path):
    from mmllm.data.dataset import load_dataset
    from mmllm.data.generate import make_dataset

    make_dataset(tmp_path / "d", 6, seed=3, split="train", tasks=["text"], progress=False)
    rows = load_dataset(tmp_path / "d")
    for row in rows:
        texts = [r for r in row.regions[0] if r.get("kind") == "text"]
        assert [r["text"] for r in texts] == [row.answer]
        x0, y0, x1, y1 = texts[0]["box"]
        assert 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1
    assert not {r.answer for r in rows} & set(phrase_list(rows, "background"))
    assert len(reading_phrases(rows)) == 1 + len({reading_phrase(r.answer) for r in rows})


def patch_image(path, colour, cell):
    """A 32 x 32 grey image with a coloured patch filling one cell of the 4 x 4 grid."""
    image = Image.new("RGB", (32, 32), (128, 128, 128))
    row, col = divmod(cell, 4)
    image.paste(colour, (col * 8, row * 8, col * 8 + 8, row * 8 + 8))
    image.save(path)
    return {"box": [col / 4, row / 4, (col + 1) / 4, (row + 1) / 4], "kind": "text"}


@pytest.fixture
def reading_set(tiny, tmp_path):
    """Two 'words' (a red and a blue patch) and a number, in different cells, 12 images."""
    model = tiny.model("llama", adapter="mlp2x_gelu")
    model.unfreeze_encoder()
    samples = []
    for i in range(12):
        text, colour = [("red", (255, 0, 0)), ("blue", (0, 0, 255)), ("42", (0, 255, 0))][i % 3]
        path = tmp_path / f"{i}.png"
        region = {**patch_image(path, colour, cell=(5 * i) % 16), "text": text}
        samples.append(Sample([], [path], regions=[[region]]))
    return model, samples


def test_build_data_labels_text_cells_and_caches_the_teacher(reading_set):
    model, samples = reading_set
    phrases = reading_phrases(samples)
    assert phrases == ["background", "4 2", "blue", "red"]
    data = build_reading_data(model, samples, phrases, 0.08, progress=False)
    box = torch.tensor([samples[0].regions[0][0]["box"]])
    owner = assign_cells(box, model.encoder.grid, 0.08)
    assert data.labels[0].tolist() == [3 if o == 0 else BACKGROUND for o in owner.tolist()]
    with torch.no_grad():
        now = model.adapter(model.encoder(data[0]["pixel_values"][None]))[0]
    torch.testing.assert_close(data.teacher[0].float(), now, atol=2e-3, rtol=1e-2)
    plain = [Sample([], s.images, regions=[[]]) for s in samples]
    with pytest.raises(MMLLMError, match="text regions"):
        build_reading_data(model, plain, phrases, 0.08, progress=False)


def train_reading(model, data, phrases, keep_weight, steps=150):
    """Adam on the objective's trainable parameters (encoder + adapter), full batch."""
    objective = ReadingObjective(model, phrases, ce_weight=0.1, scale=5.0, keep_weight=keep_weight)
    objective.train()
    batch = {k: torch.stack([data[i][k] for i in range(len(data))]) for k in data[0]}
    opt = torch.optim.Adam([p for p in objective.parameters() if p.requires_grad], lr=3e-3)
    for _ in range(steps):
        loss = objective(**batch)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    return objective


def test_training_reads_the_text_cells_and_keeps_the_others(reading_set, tiny):
    """Adam on encoder + adapter: the text cells come to decode to their word (and a number's
    cells to its digits); the keep term holds the other cells near the teacher (compared with
    the same training without it); the LLM is untouched."""
    model, samples = reading_set
    phrases = reading_phrases(samples)
    data = build_reading_data(model, samples, phrases, 0.08, progress=False)
    objective = ReadingObjective(model, phrases, ce_weight=0.1, scale=5.0, keep_weight=10.0)
    trained = {id(p) for p in objective.parameters() if p.requires_grad}
    assert {id(p) for p in model.encoder.parameters() if p.requires_grad} <= trained
    assert not trained & {id(p) for p in model.llm.parameters()}
    objective.train()
    assert objective.adapter.training and not model.encoder.training
    assert objective.reading_accuracy(data)["keep_error"] < 1e-4  # the teacher is the model
    llm_before = [p.clone() for p in model.llm.parameters()]
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    after = train_reading(model, data, phrases, keep_weight=10.0).reading_accuracy(data)
    assert after["word"] == 1.0 and after["word_images"] == 8
    assert after["digits"] == 1.0 and after["number_images"] == 4
    assert all(torch.equal(a, b) for a, b in zip(llm_before, model.llm.parameters(), strict=True))
    model.load_state_dict(initial)
    unkept = train_reading(model, data, phrases, keep_weight=0.0).reading_accuracy(data)
    assert after["keep_error"] < 0.3 * unkept["keep_error"]


def test_recipe_checks_of_the_reading_stage():
    from mmllm.recipe import load_recipe

    with pytest.raises(MMLLMError, match="encoder_lr"):
        load_recipe("default_read19", {"train.encoder_lr": None})
    with pytest.raises(MMLLMError, match="stage read trains on full token grids"):
        load_recipe("default_read19", {"lora": {"r": 4}})
    with pytest.raises(MMLLMError, match="keep_weight"):
        load_recipe("default_read19", {"reading.keep_weight": -1})


@pytest.mark.slow
def test_reading_recipe_then_the_lora_stage_at_smoke_size(tmp_path):
    """default_read19 and the LoRA stages 19-26 run at smoke size from a LoRA
    checkpoint: the reading stage writes its report and a fine-tuned encoder (and resumes from its
    checkpoint), which the LoRA stages carry on; stages 23-25 average into one loadable model, as
    the shipped default was made, and the focus stages and stages 27-28 continue that average and
    average again with it; stages 29-32 continue that average of averages on wide phrasings and
    29-30 average with it into the shipped default's shape; stages 33-34 continue that default
    and average back into it, stages 35-36 continue that average, and stages 37-38 continue it
    with the encoder trained, which averaging back averages too."""
    from safetensors.torch import load_file

    from mmllm.data.generate import make_dataset
    from mmllm.recipe import load_recipe
    from mmllm.train import train

    make_dataset(tmp_path / "train", 8, seed=1, split="train", tasks=["text"], progress=False)
    make_dataset(tmp_path / "val", 4, seed=1, split="val", tasks=["text"], progress=False)
    data = {"data.train": str(tmp_path / "train"), "data.eval": str(tmp_path / "val")}
    start = train(
        load_recipe(
            "default_stage10",
            {**data, "train.output_dir": str(tmp_path / "s"), "model.init_from": None},
        ),
        smoke=True,
    )
    previous = start
    chain = [
        "default_read19",
        "default_stage19",
        "default_stage20",
        "default_stage21",
        "default_stage22",
        "default_stage23",
        "default_stage24",
        "default_stage25",
        "default_stage26",
    ]
    for name in chain:
        overrides = {
            **data,
            "train.output_dir": str(tmp_path / name),
            "model.init_from": str(previous),
        }
        previous = train(load_recipe(name, overrides), smoke=True)
        assert (previous / "encoder.safetensors").is_file()
        assert (previous / "lora" / "adapter_model.safetensors").is_file()
        if name == "default_read19":
            report = json.loads((previous / "reading.json").read_text())
            assert {"keep_error", "word"} <= set(report)
            # resuming loads the checkpoint's encoder, adapter and LoRA into the objective's model
            again = train(load_recipe(name, overrides), smoke=True, resume=True)
            assert again == previous
    from mmllm.averaging import average_checkpoints
    from mmllm.modeling import MMLLMForConditionalGeneration

    soup = average_checkpoints(
        [tmp_path / f"default_stage{n}" / "final" for n in (23, 24, 25)], tmp_path / "soup", rank=16
    )
    recipes = json.loads((soup / "averaged_from.json").read_text())["recipes"]
    assert recipes == ["default_stage23", "default_stage24", "default_stage25"]
    model = MMLLMForConditionalGeneration.from_pretrained(soup)
    assert model.llm.peft_config["default"].r == 16
    # the focus stages and stages 27-28 continue the average like any checkpoint, and the
    # continuations average again with their start (an average of averages)
    members = [soup]
    for name in ("default_focus27", "default_stage27", "default_stage28", "default_focus28"):
        overrides = {**data, "train.output_dir": str(tmp_path / name), "model.init_from": str(soup)}
        members.append(train(load_recipe(name, overrides), smoke=True))
        assert (members[-1] / "lora" / "adapter_model.safetensors").is_file()
    second = average_checkpoints(members, tmp_path / "soup2", rank=16)
    provenance = json.loads((second / "averaged_from.json").read_text())
    assert provenance["recipes"] == [
        "average(default_stage23, default_stage24, default_stage25)",
        "default_focus27",
        "default_stage27",
        "default_stage28",
        "default_focus28",
    ]
    assert provenance["averaged_members"]["0"]["recipes"] == recipes
    assert MMLLMForConditionalGeneration.from_pretrained(second).llm.peft_config["default"].r == 16
    # stages 29-32 continue the average of averages on wide phrasings
    make_dataset(tmp_path / "wide", 8, seed=2, split="train", phrasings="wide", progress=False)

    def wide_stage(name, start):
        """Recipe ``name`` at smoke size on the wide-phrasing data, continuing ``start``."""
        overrides = {
            **data,
            "data.train": str(tmp_path / "wide"),
            "train.output_dir": str(tmp_path / name),
            "model.init_from": str(start),
        }
        return train(load_recipe(name, overrides), smoke=True)

    wide_members = []
    for name in ("default_stage29", "default_stage30", "default_stage31", "default_stage32"):
        wide_members.append(wide_stage(name, second))
        assert (wide_members[-1] / "lora" / "adapter_model.safetensors").is_file()
    # the shipped default: that average with stages 29 and 30
    third = average_checkpoints([second, *wide_members[:2]], tmp_path / "soup3", rank=16)
    provenance = json.loads((third / "averaged_from.json").read_text())
    assert provenance["recipes"][1:] == ["default_stage29", "default_stage30"]
    assert provenance["averaged_members"]["0"]["recipes"][1] == "default_focus27"
    assert MMLLMForConditionalGeneration.from_pretrained(third).llm.peft_config["default"].r == 16
    # stages 33-34 continue that default on wide phrasings and average back into it
    next_members = [wide_stage(name, third) for name in ("default_stage33", "default_stage34")]
    fourth = average_checkpoints([third, *next_members], tmp_path / "soup4", rank=16)
    provenance = json.loads((fourth / "averaged_from.json").read_text())
    assert provenance["recipes"][1:] == ["default_stage33", "default_stage34"]
    assert provenance["averaged_members"]["0"]["recipes"][1:] == [
        "default_stage29",
        "default_stage30",
    ]
    assert MMLLMForConditionalGeneration.from_pretrained(fourth).llm.peft_config["default"].r == 16
    # stages 35-36: the same round once more, from that average
    for name in ("default_stage35", "default_stage36"):
        assert (wide_stage(name, fourth) / "lora").is_dir()
    # stages 37-38 train the encoder again, and averaging back averages the encoders too
    encoder_members = [wide_stage(name, fourth) for name in ("default_stage37", "default_stage38")]
    start_encoder = load_file(fourth / "encoder.safetensors")
    moved = load_file(encoder_members[0] / "encoder.safetensors")
    assert any(not torch.equal(start_encoder[k], moved[k]) for k in start_encoder)
    fifth = average_checkpoints([fourth, *encoder_members], tmp_path / "soup5", rank=16)
    averaged = load_file(fifth / "encoder.safetensors")
    other = load_file(encoder_members[1] / "encoder.safetensors")
    for key, value in averaged.items():
        if value.is_floating_point():
            expected = (start_encoder[key] + moved[key] + other[key]) / 3
            torch.testing.assert_close(value, expected)
    # stages 39-40 (not shipped) continue that average with focus at `distinct=1` in the loop
    for name in ("default_stage39", "default_stage40"):
        recipe = load_recipe(name)
        assert "focus:3" in recipe.train.reduction_budgets
        assert (wide_stage(name, fifth) / "lora" / "adapter_model.safetensors").is_file()
