"""ImageGenerator: cached sampling equals a plain recompute, CFG, vocabulary folding, I/O."""

import pytest
import torch
from peft import LoraConfig, get_peft_model

from mmllm.errors import MMLLMError
from mmllm.generation.model import ImageGenerator, sample_logits

PROMPTS = ["a red circle", "two blue stars left of a very long green square"]


def reference_greedy(gen: ImageGenerator, prompt: str, cfg_scale: float) -> list[int]:
    """Greedy ids by recomputing the whole unpadded sequence at every step, one prompt alone."""

    def logits_of(text: str, codes: list[int]) -> torch.Tensor:
        ids = gen.text_tokenizer(gen.config.template.format(prompt=text), add_special_tokens=False)
        embeds = torch.cat(
            [
                gen.llm.get_input_embeddings()(torch.tensor([ids["input_ids"]])),
                gen.image_rows[[gen.boi, *codes]][None],
            ],
            1,
        )
        hidden = gen._decoder()(inputs_embeds=embeds).last_hidden_state
        return (hidden[0, -1] @ gen.image_rows[: gen.num_codes].T).float()

    codes: list[int] = []
    for _ in range(gen.num_image_tokens):
        logits = logits_of(prompt, codes)
        if cfg_scale != 1:
            uncond = logits_of("", codes)
            logits = uncond + cfg_scale * (logits - uncond)
        codes.append(int(logits.argmax()))
    return codes


@pytest.mark.parametrize("cfg_scale", [1.0, 3.0])
def test_cached_batched_greedy_matches_plain_recompute(generator, cfg_scale):
    torch.manual_seed(1)
    generator.image_rows.data += torch.randn_like(generator.image_rows) * 2  # spread the logits
    ids = generator.generate_ids(PROMPTS, temperature=0, cfg_scale=cfg_scale)
    assert ids.shape == (2, generator.num_image_tokens)
    for row, prompt in zip(ids.tolist(), PROMPTS, strict=True):
        assert row == reference_greedy(generator, prompt, cfg_scale)


def test_forward_loss_is_cross_entropy_of_teacher_forced_logits(generator):
    ids, mask = generator.prompt_batch(PROMPTS)
    image_ids = torch.randint(0, generator.num_codes, (2, generator.num_image_tokens))
    out = generator(ids, mask, image_ids)
    assert out["logits"].shape == (2, generator.num_image_tokens, generator.num_codes)
    # the last prompt row is unpadded: its logits must equal a plain forward of that sequence
    n = mask[1].sum()
    embeds = torch.cat(
        [
            generator.llm.get_input_embeddings()(ids[1:, -n:]),
            generator.image_rows[[generator.boi, *image_ids[1, :-1].tolist()]][None],
        ],
        1,
    )
    hidden = generator._decoder()(inputs_embeds=embeds).last_hidden_state
    expected = hidden[0, -generator.num_image_tokens :] @ generator.image_rows[:-1].T
    torch.testing.assert_close(out["logits"][1], expected, atol=1e-5, rtol=1e-4)
    manual = torch.nn.functional.cross_entropy(out["logits"].reshape(-1, 9), image_ids.reshape(-1))
    torch.testing.assert_close(out["loss"], manual)


def test_new_rows_start_from_projected_codebook(generator):
    codes = generator.image_tokenizer.quantizer.ids_to_codes(torch.arange(generator.num_codes))
    rows = generator.image_rows[: generator.num_codes].detach()
    # rows are an affine function of the codes: a least-squares affine fit leaves no residual
    design = torch.cat([codes, torch.ones(len(codes), 1)], 1).double()
    solution = torch.linalg.lstsq(design, rows.double()).solution
    assert (design @ solution - rows.double()).abs().max() < 1e-4
    # and distinct codes get distinct rows
    assert torch.cdist(rows, rows).fill_diagonal_(1).min() > 0


def test_to_hf_folds_rows_into_the_llm_vocabulary(generator, tmp_path):
    torch.manual_seed(2)
    generator.llm = get_peft_model(
        generator.llm, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    )
    ids, mask = generator.prompt_batch(PROMPTS[:1])
    image_ids = torch.randint(0, generator.num_codes, (1, generator.num_image_tokens))
    expected = generator(ids, mask, image_ids)["logits"][0]
    llm, tok = generator.to_hf(tmp_path / "hf")
    first = tok.convert_tokens_to_ids("<img_0>")
    assert tok.convert_tokens_to_ids("<boi>") == first + generator.num_codes
    full = torch.cat(
        [ids[0], torch.tensor([first + generator.num_codes]), image_ids[0, :-1] + first]
    )
    logits = llm(full[None]).logits[0, -generator.num_image_tokens :, first : first + 9]
    torch.testing.assert_close(logits, expected, atol=1e-4, rtol=1e-4)
    assert (tmp_path / "hf" / "model.safetensors").is_file()


def test_save_and_load_round_trip(generator, tmp_path):
    llm_dir = tmp_path / "llm"
    generator.llm.save_pretrained(llm_dir)
    generator.text_tokenizer.save_pretrained(llm_dir)
    generator.config.llm = str(llm_dir)
    generator.llm = get_peft_model(
        generator.llm, LoraConfig(r=4, target_modules=["q_proj"], init_lora_weights=False)
    )
    generator.image_rows.data += 1.0
    before = generator.generate_ids(PROMPTS, temperature=0.8, top_k=5, seed=3)
    generator.save_pretrained(tmp_path / "gen")
    loaded = ImageGenerator.from_pretrained(tmp_path / "gen")
    assert torch.equal(loaded.generate_ids(PROMPTS, temperature=0.8, top_k=5, seed=3), before)
    images = loaded.generate(PROMPTS[0], seed=0)
    assert images[0].size == (16, 16)


def test_sampling_filters_to_top_k():
    logits = torch.tensor([[0.0, 5.0, 4.0, -1.0]]).repeat(200, 1)
    picks = sample_logits(logits, 1.0, 2, torch.Generator().manual_seed(0))
    assert set(picks.tolist()) == {1, 2}
    assert sample_logits(logits, 0.0, None, None).unique().tolist() == [1]


@pytest.mark.parametrize(
    ("prompts", "kwargs", "message"),
    [
        ([""], {}, "empty prompt"),
        ([], {}, "empty prompt"),
        (["a"], {"temperature": -1}, "temperature"),
        (["a"], {"top_k": 0}, "top_k"),
        (["a"], {"cfg_scale": 0.5}, "cfg_scale"),
    ],
)
def test_bad_sampling_settings_are_refused(generator, prompts, kwargs, message):
    with pytest.raises(MMLLMError, match=message):
        generator.generate_ids(prompts, **kwargs)


def test_wrong_image_id_count_is_refused(generator):
    ids, mask = generator.prompt_batch(["a"])
    with pytest.raises(MMLLMError, match="16 image ids"):
        generator(ids, mask, torch.zeros(1, 5, dtype=torch.long))


def test_not_a_generator_folder(tmp_path):
    with pytest.raises(MMLLMError, match="not a generator folder"):
        ImageGenerator.from_pretrained(tmp_path)
