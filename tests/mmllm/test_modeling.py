import pytest
import torch

from mmllm.errors import MMLLMError
from mmllm.modeling import MMLLMForConditionalGeneration
from mmllm.processor import MMLLMProcessor


@pytest.mark.parametrize("family", ["llama", "qwen2", "gpt2"])
def test_any_causal_lm_trains_and_generates(family, conversations, images, tiny):
    model = tiny.model(family)
    proc = MMLLMProcessor.from_model(model)
    batch = proc(conversations, [[im] for im in images], train=True)
    assert (batch["input_ids"] == model.image_token_id).sum() == 2 * model.num_image_tokens() == 32
    out = model(**batch)
    assert torch.isfinite(out.loss)
    model.llm.requires_grad_(False)
    out.loss.backward()
    assert model.adapter.net[0].weight.grad is not None
    assert all(p.grad is None for p in model.llm.parameters())
    gen = proc([c[:1] for c in conversations], [[im] for im in images])
    ids = model.generate(**gen, max_new_tokens=3, do_sample=False)
    assert ids.shape[0] == 2 and ids.shape[1] <= 3


def test_only_answer_tokens_are_labelled(conversations, images, tiny):
    model = tiny.model()
    proc = MMLLMProcessor.from_model(model)
    batch = proc(conversations, [[im] for im in images], train=True)
    labelled = batch["labels"][0][batch["labels"][0] != -100]
    assert proc.tokenizer.decode(labelled).replace(" ", "").startswith("red")


@pytest.mark.parametrize(
    ("adapter", "kwargs", "tokens"),
    [
        ("mlp2x_gelu", {}, 16),
        ("pixel_shuffle", {"scale": 2}, 4),
        ("resampler", {"num_queries": 5, "heads": 4}, 5),
        ("pool_swiglu", {"side": 2}, 4),
    ],
)
def test_adapters_fill_exactly_the_placeholders(
    adapter, kwargs, tokens, conversations, images, tiny
):
    model = tiny.model(adapter=adapter, adapter_kwargs=kwargs)
    assert model.num_image_tokens() == tokens
    proc = MMLLMProcessor.from_model(model)
    batch = proc(conversations, [[im] for im in images], train=True)
    assert model.encode_images(batch["pixel_values"]).shape == (2, tokens, 32)
    assert torch.isfinite(model(**batch).loss)


def test_reduction_changes_placeholder_count(conversations, images, tiny):
    model = tiny.model(reduction="pool:2x2")
    assert model.num_image_tokens() == 4
    model.set_reduction("random:7")
    proc = MMLLMProcessor.from_model(model)
    batch = proc(conversations, [[im] for im in images], train=True)
    assert (batch["input_ids"] == model.image_token_id).sum() == 14
    assert torch.isfinite(model(**batch).loss)


def test_save_load_roundtrip_is_exact(tmp_path, conversations, images, tiny):
    model = tiny.model()
    torch.nn.init.normal_(model.adapter.net[0].weight)
    proc = MMLLMProcessor.from_model(model)
    batch = proc(conversations, [[im] for im in images], train=True)
    model.save_pretrained(tmp_path)
    assert (tmp_path / "adapter.safetensors").is_file() and (
        tmp_path / "chat_template.jinja"
    ).is_file()
    llm, tok = tiny.llm("llama")
    loaded = MMLLMForConditionalGeneration.from_pretrained(
        tmp_path, encoder=tiny.encoder(), llm=llm, tokenizer=tok
    )
    torch.testing.assert_close(loaded(**batch).loss, model(**batch).loss)
    reproc = MMLLMProcessor.from_pretrained(tmp_path)
    assert torch.equal(
        reproc(conversations, [[im] for im in images], train=True)["input_ids"], batch["input_ids"]
    )


def test_merge_lora_on_load_keeps_the_function_and_refuses_to_save(
    tmp_path, conversations, images, tiny
):
    """Inference loads fold LoRA into the weights (no peft wrappers left) with the same loss as
    the unmerged model; saving such a model would drop the fine-tuning, so it is refused."""
    from peft import LoraConfig, get_peft_model

    model = tiny.model()
    model.llm = get_peft_model(model.llm, LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    for name, p in model.llm.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.5)  # a LoRA that changes the function
    batch = MMLLMProcessor.from_model(model)(conversations, [[im] for im in images], train=True)
    model.save_pretrained(tmp_path)
    loaded = {}
    for merge in (False, True):
        llm, tok = tiny.llm("llama")
        loaded[merge] = MMLLMForConditionalGeneration.from_pretrained(
            tmp_path, encoder=tiny.encoder(), llm=llm, tokenizer=tok, merge_lora=merge
        )
    assert hasattr(loaded[False].llm, "peft_config")
    assert not any("lora" in n for n, _ in loaded[True].llm.named_modules())
    with torch.no_grad():
        base, unmerged, merged = (m(**batch).loss for m in (model, loaded[False], loaded[True]))
    torch.testing.assert_close(unmerged, base)
    torch.testing.assert_close(merged, base, rtol=1e-5, atol=1e-5)
    with pytest.raises(MMLLMError, match="merged for inference"):
        loaded[True].save_pretrained(tmp_path / "again")
    loaded[False].save_pretrained(tmp_path / "again")


def test_pickled_checkpoint_is_refused(tmp_path, tiny):
    model = tiny.model()
    model.save_pretrained(tmp_path)
    torch.save({"w": torch.zeros(1)}, tmp_path / "pytorch_model.bin")
    with pytest.raises(MMLLMError, match="pickled weights"):
        MMLLMForConditionalGeneration.from_pretrained(tmp_path, encoder=tiny.encoder())


def test_placeholder_mismatch_is_a_clear_error(conversations, images, tiny):
    model = tiny.model()
    proc = MMLLMProcessor.from_model(model)
    batch = proc(conversations, [[im] for im in images], train=True)
    with pytest.raises(MMLLMError, match="placeholders"):
        model(batch["input_ids"], batch["attention_mask"], batch["pixel_values"][:1])


def test_frozen_encoder_stays_in_eval_mode(tiny):
    model = tiny.model()
    model.train()
    assert model.adapter.training and model.llm.training
    assert not model.encoder.training


def test_text_conditioned_reducer_gets_the_prompt_in_llm_space(conversations, images, tiny):
    """dpp (CDPruner) scores relevance against the text the LLM reads, through the adapter,
    with the answer tokens of a training batch hidden."""
    model = tiny.model()
    model.set_reduction("dpp:4,theta=5")
    proc = MMLLMProcessor.from_model(model)
    batch = proc(conversations, [[im] for im in images], train=True)
    seen = {}
    reduce = model.reducer.reduce

    def spy(tokens, text):
        seen["text"] = text
        return reduce(tokens, text)

    model.reducer.reduce = spy
    assert torch.isfinite(model(**batch).loss)
    text = seen["text"]
    ids = batch["input_ids"]
    question = (ids != model.image_token_id) & batch["attention_mask"].bool()
    answers = batch["labels"] != -100
    assert answers.any()
    # the reducer reads the prompt but never the answers it is trained to produce
    assert torch.equal(text.mask, question & ~answers)
    model.eval()
    model(input_ids=ids, attention_mask=batch["attention_mask"], pixel_values=batch["pixel_values"])
    assert torch.equal(seen["text"].mask, question)  # no labels: nothing to hide
    torch.testing.assert_close(text.embeds, model.llm.get_input_embeddings()(ids))
    visual = model.encoder(batch["pixel_values"]).embeds
    assert text.project(visual).shape[-1] == text.embeds.shape[-1]


def test_widen_input_keeps_saved_columns_and_silences_new_ones():
    from mmllm.modeling import widen_input

    saved = {"w": torch.randn(3, 4), "ln": torch.randn(4), "b": torch.randn(3)}
    fresh = {"w": torch.randn(3, 6), "ln": torch.ones(6), "b": torch.randn(3)}
    out = widen_input(saved, fresh, vision_dim=6)
    assert torch.equal(out["w"][:, :4], saved["w"]) and not out["w"][:, 4:].any()
    assert torch.equal(out["ln"][:4], saved["ln"]) and torch.equal(out["ln"][4:], torch.ones(2))
    assert torch.equal(out["b"], saved["b"])
    with pytest.raises(MMLLMError, match="cannot grow"):
        widen_input({"w": torch.randn(2, 4)}, {"w": torch.randn(3, 6)}, vision_dim=6)


def test_wider_encoder_continues_a_checkpoint(tmp_path, tiny):
    """A head-only EfficientNet checkpoint continues with detail blocks appended to its tokens."""
    from mmllm.modeling import MMLLMConfig

    llm, tok = tiny.llm("llama")
    cfg = MMLLMConfig(encoder="efficientnet_lite0", llm="custom", image_size=64)
    model = MMLLMForConditionalGeneration(cfg, llm=llm, tokenizer=tok)
    model.save_pretrained(tmp_path)
    wide = MMLLMForConditionalGeneration.from_pretrained(
        tmp_path, llm=llm, tokenizer=tok, wider_encoder="efficientnet_lite0:detail=7"
    )
    assert wide.config.vision_dim == 1280 + 80 * 4
    first = wide.adapter.net[0].weight
    assert torch.equal(first[:, :1280], model.adapter.net[0].weight) and not first[:, 1280:].any()
    with pytest.raises(MMLLMError, match="only the same encoder"):
        MMLLMForConditionalGeneration.from_pretrained(
            tmp_path, llm=llm, tokenizer=tok, wider_encoder="hf:/somewhere"
        )


def test_fine_tuned_encoder_trains_and_round_trips(tmp_path, conversations, images, tiny):
    """Frozen: no gradient reaches the encoder. Unfrozen: it does, the encoder stays in eval
    mode, and its weights travel in encoder.safetensors."""
    model = tiny.model()
    proc = MMLLMProcessor.from_model(model)
    batch = proc(conversations, [[im] for im in images], train=True)
    model.train()
    model(**batch).loss.backward()
    assert all(p.grad is None for p in model.encoder.parameters())

    model.unfreeze_encoder()
    model.train()
    assert not model.encoder.training
    model(**batch).loss.backward()
    tuned = dict(model.encoder.named_parameters())
    names = model.encoder.trainable_state_names()
    # CLIP's post-layernorm only feeds the pooled output, which no token reads
    assert set(tuned) - set(names) == {"model.post_layernorm.weight", "model.post_layernorm.bias"}
    assert all(tuned[n].grad is not None and tuned[n].grad.abs().sum() > 0 for n in names)
    assert all(tuned[n].grad is None for n in set(tuned) - set(names))
    with torch.no_grad():
        for p in model.encoder.parameters():
            p.add_(0.1 * torch.randn_like(p))
    assert set(model.encoder_state()) == set(names)
    model.eval()
    model.save_pretrained(tmp_path)
    assert (tmp_path / "encoder.safetensors").is_file()
    llm, tok = tiny.llm("llama")
    loaded = MMLLMForConditionalGeneration.from_pretrained(
        tmp_path, encoder=tiny.encoder(), llm=llm, tokenizer=tok
    )
    assert loaded.config.encoder_finetuned
    torch.testing.assert_close(loaded(**batch).loss, model(**batch).loss)


def test_fine_tuned_encoder_file_problems_are_clear_errors(tmp_path, tiny):
    from safetensors.torch import save_file

    model = tiny.model()
    model.unfreeze_encoder()
    model.save_pretrained(tmp_path)
    save_file({"not.a.weight": torch.zeros(2)}, tmp_path / "encoder.safetensors")
    with pytest.raises(MMLLMError, match="does not have"):
        MMLLMForConditionalGeneration.from_pretrained(
            tmp_path, encoder=tiny.encoder(), llm=tiny.llm("llama")[0]
        )
    (tmp_path / "encoder.safetensors").unlink()
    with pytest.raises(MMLLMError, match=r"encoder\.safetensors is missing"):
        MMLLMForConditionalGeneration.from_pretrained(
            tmp_path, encoder=tiny.encoder(), llm=tiny.llm("llama")[0]
        )


def test_efficientnet_fine_tuning_leaves_out_the_classifier():
    from mmllm.vision_tokenizers import EfficientNetLiteEncoder

    encoder = EfficientNetLiteEncoder(image_size=64, pretrained=False)
    names = encoder.trainable_state_names()
    assert "net._conv_head.weight" in names and "net._conv_stem.weight" in names
    assert not any(n.startswith("net._fc.") for n in names)


def _nll_inputs(proc, conversations, images):
    prompt = proc([c[:-1] for c in conversations], [[im] for im in images])
    answers, answer_mask = proc.answer_ids(conversations)
    return prompt, answers, answer_mask


@pytest.mark.parametrize("reduction", ["identity", "coverage:4"])
@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_answer_nll_equals_the_training_loss_of_each_row(
    family, reduction, conversations, images, tiny
):
    """Also at a merging reduction: left-padded scoring and right-padded training must give each
    merged token the same source position and size bias."""
    model = tiny.model(family, reduction=reduction)
    torch.nn.init.normal_(model.adapter.net[0].weight)
    proc = MMLLMProcessor.from_model(model)
    # the second answer is longer, so the batch pads both the prompts and the answers
    conversations[1][-1]["content"][0]["text"] = "three stars in a row"
    prompt, answers, answer_mask = _nll_inputs(proc, conversations, images)
    assert answer_mask.sum(1).tolist()[0] < answer_mask.sum(1).tolist()[1]
    nll = model.answer_nll(**prompt, answer_ids=answers, answer_mask=answer_mask)
    for i in range(2):  # one row alone: no padding, the training loss is the reference
        alone = proc([conversations[i]], [[images[i]]], train=True)
        with torch.no_grad():
            expected = model(**alone).loss
        torch.testing.assert_close(nll[i], expected, rtol=1e-4, atol=1e-5)


def test_answer_nll_follows_in_llm_drops(conversations, images, tiny):
    model = tiny.model()
    torch.nn.init.normal_(model.adapter.net[0].weight)
    proc = MMLLMProcessor.from_model(model)
    prompt, answers, answer_mask = _nll_inputs(proc, conversations, images)
    full = model.answer_nll(**prompt, answer_ids=answers, answer_mask=answer_mask)
    model.set_reduction("fastv:layer=0,keep=16")  # keeps every visual token: same scores
    kept_all = model.answer_nll(**prompt, answer_ids=answers, answer_mask=answer_mask)
    torch.testing.assert_close(kept_all, full, rtol=1e-4, atol=1e-5)
    model.set_reduction("fastv:layer=0,keep=2")  # drops 14 of 16: the scores must change
    dropped = model.answer_nll(**prompt, answer_ids=answers, answer_mask=answer_mask)
    assert not torch.allclose(dropped, full, atol=1e-4)
    # the first answer token's score is the prefill's last-position prediction
    first = model.prefill_logits(**prompt).log_softmax(-1)
    first = -first.gather(1, answers[:, :1]).squeeze(1)
    single = answer_mask.clone()
    single[:, 1:] = 0
    only_first = model.answer_nll(**prompt, answer_ids=answers, answer_mask=single)
    torch.testing.assert_close(only_first, first, rtol=1e-4, atol=1e-5)


def test_answer_nll_needs_a_reference_answer(conversations, tiny):
    proc = MMLLMProcessor.from_model(tiny.model())
    with pytest.raises(MMLLMError, match="must end with the assistant"):
        proc.answer_ids([c[:1] for c in conversations])


def test_reduced_prompt_carries_source_positions_and_size_bias(conversations, images, tiny):
    model = tiny.model(reduction="coverage:4")
    proc = MMLLMProcessor.from_model(model)
    gen = proc([c[:1] for c in conversations], [[im] for im in images])
    prompt = model.prompt(**gen)
    visual = gen["input_ids"] == model.image_token_id
    assert prompt.position_ids is not None and prompt.key_bias is not None
    # each image still spans its 16 source positions: the text after it starts 16 later
    first = visual.float().argmax(1)
    after = first + 4
    rows = torch.arange(2)
    assert (prompt.position_ids[rows, after] - prompt.position_ids[rows, first - 1] >= 16).all()
    assert torch.equal(prompt.key_bias[~visual], torch.zeros(int((~visual).sum())))
    assert (prompt.key_bias[visual] > 0).any()  # merged tokens weigh log(size)
    model.set_reduction("identity")
    proc = MMLLMProcessor.from_model(model)
    full = model.prompt(**proc([c[:1] for c in conversations], [[im] for im in images]))
    assert full.position_ids is None and full.key_bias is None
    compact = tiny.model(
        reduction="coverage:4", visual_positions="compact", proportional_attention=False
    )
    plain = compact.prompt(**gen)
    assert plain.position_ids is None and plain.key_bias is None


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_generate_keeps_source_positions_and_size_bias_while_decoding(
    family, conversations, images, tiny
):
    """HF generate must continue from the last source position and keep the bias on the cached
    prompt keys: its logits equal a manual loop that recomputes the whole sequence each step."""
    from mmllm.layout import key_bias

    model = tiny.model(family, reduction="coverage:4")
    torch.nn.init.normal_(model.adapter.net[0].weight)
    model.llm.generation_config.eos_token_id = None
    proc = MMLLMProcessor.from_model(model)
    gen = proc([c[:1] for c in conversations], [[im] for im in images])
    out = model.generate(
        **gen, max_new_tokens=3, do_sample=False, output_logits=True, return_dict_in_generate=True
    )
    prompt = model.prompt(**gen)
    lm = model._causal_lm()
    embeds, mask, positions = prompt.embeds, gen["attention_mask"], prompt.position_ids
    with torch.no_grad(), key_bias(prompt.key_bias):
        for step in range(3):
            logits = lm(inputs_embeds=embeds, attention_mask=mask, position_ids=positions).logits
            torch.testing.assert_close(logits[:, -1], out.logits[step], rtol=1e-4, atol=1e-4)
            nxt = logits[:, -1].argmax(-1, keepdim=True)
            embeds = torch.cat([embeds, lm.get_input_embeddings()(nxt)], 1)
            mask = torch.cat([mask, torch.ones_like(nxt)], 1)
            positions = torch.cat([positions, positions[:, -1:] + 1], 1)


def test_focus_keeps_the_cells_the_question_names(conversations, images, tiny):
    """focus runs inside the model with the prompt and keeps exactly its budget of tokens."""
    model = tiny.model()
    model.set_reduction("focus:4")
    proc = MMLLMProcessor.from_model(model)
    batch = proc(conversations, [[im] for im in images], train=True)
    assert (batch["input_ids"] == model.image_token_id).sum(1).tolist() == [4] * len(images)
    assert torch.isfinite(model(**batch).loss)
