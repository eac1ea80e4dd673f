"""Stage 0: cells take the region covering them most, targets are the LLM's word embeddings,
and training the adapter alone makes its tokens decode back to their region's words."""

import json

import pytest
import torch

from mmllm.data.dataset import Sample
from mmllm.errors import MMLLMError
from mmllm.grounding import (
    BACKGROUND,
    GroundingData,
    GroundingObjective,
    assign_cells,
    build_grounding_data,
    cell_places,
    phrase_list,
)


def reference_assign(boxes, h, w, min_cover):
    """Plain loops: the covering region with the largest share of each cell, then centres."""
    owner, best = [-1] * (h * w), [0.0] * (h * w)
    for r, (x0, y0, x1, y1) in enumerate(boxes):
        for cy in range(h):
            for cx in range(w):
                ox = max(0.0, min(x1, (cx + 1) / w) - max(x0, cx / w))
                oy = max(0.0, min(y1, (cy + 1) / h) - max(y0, cy / h))
                cover = ox * oy * h * w
                if cover > min_cover and cover > best[cy * w + cx]:
                    best[cy * w + cx], owner[cy * w + cx] = cover, r
    for r, (x0, y0, x1, y1) in enumerate(boxes):
        cx = min(int((x0 + x1) / 2 * w), w - 1)
        cy = min(int((y0 + y1) / 2 * h), h - 1)
        owner[cy * w + cx] = r
    return owner


@pytest.mark.parametrize(("h", "w"), [(7, 7), (4, 6), (1, 3)])
def test_assign_cells_matches_plain_loops(h, w):
    gen = torch.Generator().manual_seed(h * 10 + w)
    for n in (0, 1, 3, 8):
        a, b = torch.rand(n, 2, generator=gen), torch.rand(n, 2, generator=gen)
        boxes = torch.cat([torch.minimum(a, b), torch.maximum(a, b) + 1e-3], 1).clamp(max=1)
        boxes = boxes[:, [0, 1, 2, 3]]
        got = assign_cells(boxes, (h, w), 0.08).tolist()
        assert got == reference_assign(boxes.tolist(), h, w, 0.08)


def test_small_region_keeps_its_centre_cell():
    # a box far smaller than a cell still owns the cell of its centre
    owner = assign_cells(torch.tensor([[0.52, 0.52, 0.53, 0.53]]), (7, 7), 0.08)
    assert owner.tolist().count(0) == 1 and owner[3 * 7 + 3] == 0


def test_cell_places_are_the_thirds_of_cell_centres():
    from mmllm.data.tasks import POSITIONS

    assert cell_places((3, 3)) == [POSITIONS[(c, r)] for r in range(3) for c in range(3)]
    places = cell_places((7, 7))
    for row in range(7):
        for col in range(7):  # plain reference: which third the cell's centre falls in
            third = (int((col + 0.5) / 7 * 3), int((row + 0.5) / 7 * 3))
            assert places[row * 7 + col] == POSITIONS[third]
    assert places[:7] == ["top left"] * 2 + ["top"] * 3 + ["top right"] * 2


def fit(objective, data, steps):
    """Adam on the objective's (the adapter's) parameters, full batch."""
    opt = torch.optim.Adam(objective.parameters(), lr=3e-3)
    for _ in range(steps):
        loss = objective(data.features.float(), data.labels)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()


@pytest.fixture
def model(tiny):
    return tiny.model("llama", adapter="mlp2x_gelu")


def test_targets_are_sums_of_word_embeddings(model):
    phrases = ["background", "red circle", "blue circle"]
    objective = GroundingObjective(model, phrases, ce_weight=0.1, scale=5.0, background_weight=0.2)
    table = model.llm.get_input_embeddings().weight.detach()

    def word(w):
        return table[model.tokenizer.encode(w, add_special_tokens=False)].mean(0)

    torch.testing.assert_close(objective.targets[1], word("red") + word("circle"))
    torch.testing.assert_close(objective.targets[0], word("background"))
    assert objective.words == ["blue", "circle", "red"]
    assert objective.soft[1].tolist() == [0.0, 0.5, 0.5]  # soft target over its two words


def test_training_the_adapter_alone_makes_tokens_decode_to_their_words(model):
    """Features that identify a phrase (plus noise) are learnable onto their words; the LLM
    itself is untouched."""
    phrases = ["background", "red circle", "blue circle", "red square", "blue square"]
    objective = GroundingObjective(model, phrases, ce_weight=0.1, scale=5.0, background_weight=0.2)
    gen = torch.Generator().manual_seed(0)
    dim = model.config.vision_dim
    codes = torch.randn(len(phrases), dim, generator=gen)
    labels = torch.randint(0, len(phrases), (64, 16), generator=gen)
    feats = codes[labels] + 0.1 * torch.randn(64, 16, dim, generator=gen)
    data = GroundingData(feats.half(), labels, phrases)
    llm_before = [p.clone() for p in model.llm.parameters()]
    before = objective.word_accuracy(data)
    assert {id(p) for p in objective.parameters()} == {id(p) for p in model.adapter.parameters()}
    fit(objective, data, steps=150)
    after = objective.word_accuracy(data)
    assert after["word_1"] == after["word_2"] == 1.0 and before["word_1"] < 0.9
    assert after["tokens"] == int((labels != BACKGROUND).sum())
    assert all(torch.equal(a, b) for a, b in zip(llm_before, model.llm.parameters(), strict=True))


def test_place_targets_add_each_cells_place_words(tiny):
    model = tiny.model("llama", adapter="mlp2x_gelu", adapter_kwargs={"positions": 16})
    phrases = ["background", "red circle"]
    objective = GroundingObjective(model, phrases, 0.1, 5.0, 0.2, place_words=True)
    table = model.llm.get_input_embeddings().weight.detach()

    def word(w):
        return table[model.tokenizer.encode(w, add_special_tokens=False)].mean(0)

    assert objective.places == cell_places((4, 4))
    assert objective.place_vocab == ["bottom", "center", "left", "right", "top"]
    torch.testing.assert_close(objective.place_targets[0], word("top") + word("left"))
    torch.testing.assert_close(objective.place_targets[5], word("center"))  # (1, 1)
    assert objective.place_soft[0].tolist() == [0.0, 0.0, 0.5, 0.0, 0.5]


@pytest.mark.parametrize("positions", [16, 0])
def test_place_words_are_learnt_only_with_cell_embeddings(tiny, positions):
    """Features that say what a cell shows but not where: with the adapter's cell embeddings
    every cell decodes to its place; without them the place cannot be told from the input."""
    torch.manual_seed(0)  # the adapter's init draws from the global generator
    model = tiny.model("llama", adapter="mlp2x_gelu", adapter_kwargs={"positions": 16})
    if not positions:
        model.adapter.position = None
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():  # word-sized embeddings (the tiny LLM's are ~100x smaller than
        # SmolLM2's), so the cross-entropies at scale 5 can single a word out
        model.llm.get_input_embeddings().weight.normal_(0, 0.3, generator=gen)
    phrases = ["background", "red circle", "blue square"]
    objective = GroundingObjective(model, phrases, 0.1, 5.0, 0.2, place_words=True)
    dim = model.config.vision_dim
    codes = torch.randn(len(phrases), dim, generator=gen)
    labels = torch.randint(0, len(phrases), (64, 16), generator=gen)
    feats = codes[labels] + 0.1 * torch.randn(64, 16, dim, generator=gen)
    data = GroundingData(feats.half(), labels, phrases)
    fit(objective, data, steps=300)
    after = objective.word_accuracy(data)
    assert after["word_1"] == after["word_2"] == 1.0  # what: learnt either way
    if positions:
        assert after["place"] >= 0.9  # (the tiny tokenizer splits place words into shared pieces)
    else:
        assert after["place"] < 0.3  # 9 places; nothing in the input tells them apart


def test_build_data_labels_tokens_from_regions(model, tmp_path):
    from PIL import Image

    Image.new("RGB", (64, 64), "white").save(tmp_path / "a.png")
    regions = [[{"box": [0.0, 0.0, 0.5, 0.5], "text": "Red Circle"}]]
    sample = Sample([], [tmp_path / "a.png"], regions=regions)
    phrases = phrase_list([sample], "background")
    assert phrases == ["background", "red circle"]
    data = build_grounding_data(model, [sample], phrases, 0.08, progress=False)
    h, w = model.encoder.grid
    owner = assign_cells(torch.tensor([[0.0, 0.0, 0.5, 0.5]]), (h, w), 0.08)
    assert data.features.shape[:2] == (1, h * w)
    assert data.labels[0].tolist() == [1 if o == 0 else 0 for o in owner.tolist()]
    with pytest.raises(MMLLMError, match="rows with 'regions'"):
        build_grounding_data(model, [Sample([], [tmp_path / "a.png"])], phrases, 0.08)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("ground_recipe", "stages"),
    [
        ("default_ground", ["default_stage8"]),
        (
            "default_ground_place",
            [
                "default_stage10",
                "default_stage11",
                "default_stage12",
                "default_stage13",
                "default_stage14",
                "default_stage15",
                "default_stage16",
                "default_stage17",
                "default_stage18",
            ],
        ),
    ],
)
def test_ground_recipe_then_lora_stages(tmp_path, ground_recipe, stages):
    """A stage-0 recipe at smoke size writes an adapter and a word-accuracy report (the place
    recipe also place accuracy and the cell embeddings), and each LoRA stage continues the
    previous one, keeping the cell embeddings (and, once fine-tuned, the encoder)."""
    from safetensors.torch import load_file

    from mmllm.data.generate import make_dataset
    from mmllm.recipe import load_recipe
    from mmllm.train import train

    make_dataset(tmp_path / "train", 10, seed=1, split="train", progress=False)
    make_dataset(tmp_path / "val", 4, seed=1, split="val", progress=False)
    data = {"data.train": str(tmp_path / "train"), "data.eval": str(tmp_path / "val")}
    recipe = load_recipe(ground_recipe, {**data, "train.output_dir": str(tmp_path / "g")})
    places = recipe.grounding.place_words
    previous = train(recipe, smoke=True)
    report = json.loads((previous / "grounding.json").read_text())
    assert report["tokens"] > 0 and {"word_1", "word_2"} <= set(report)
    assert ("place" in report) == places
    for stage in stages:
        overrides = {
            **data,
            "train.output_dir": str(tmp_path / stage),
            "model.init_from": str(previous),
        }
        recipe = load_recipe(stage, overrides)
        previous = train(recipe, smoke=True)
        assert (previous / "lora" / "adapter_model.safetensors").is_file()
        if recipe.train.encoder_lr is not None:  # a fine-tuned encoder travels with the stage
            assert (previous / "encoder.safetensors").is_file()
    adapter = load_file(previous / "adapter.safetensors")
    assert ("position.weight" in adapter) == places
    if places:
        assert adapter["position.weight"].shape == (49, 576)


def test_stage_zero_refuses_lora_and_token_folding_adapters(tmp_path, tiny):
    from mmllm.data.generate import make_dataset
    from mmllm.recipe import load_recipe
    from mmllm.train import train

    with pytest.raises(MMLLMError, match="stage 0 trains on full token grids"):
        load_recipe("default_ground", {"lora": {"r": 4}})
    make_dataset(tmp_path / "d", 4, seed=1, split="train", progress=False)
    recipe = load_recipe(
        "default_ground",
        {
            "data.train": str(tmp_path / "d"),
            "data.eval": None,
            "model.adapter": "pixel_shuffle",
            "model.encoder": "efficientnet_lite0",
            "train.output_dir": str(tmp_path / "o"),
        },
    )
    with pytest.raises(MMLLMError, match="does not map tokens one to one"):
        train(recipe, smoke=True)
