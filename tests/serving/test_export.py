"""`mmllm export` on tiny models: the spec vLLM reads, placeholder counts, int8 weights, errors."""

import json

import pytest
import torch
from safetensors.torch import load_file

from mmllm.errors import MMLLMError
from mmllm.serving.export import export_model, quantize_w8a8
from mmllm.serving.spec import ARCHITECTURE, ServedSpec


@pytest.mark.parametrize("reduction", ["identity", "divprune:5", "pool:2x2", "tome:r=0.5"])
def test_spec_promises_the_models_placeholder_count(tiny, tmp_path, reduction):
    model = tiny.model(reduction=reduction)
    out = export_model(model, tmp_path / "out")
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == [ARCHITECTURE]
    spec = ServedSpec.from_config(config)
    assert spec.reduction == reduction
    assert spec.image_seq_len(config["hidden_size"]) == model.num_image_tokens()
    assert spec.image_token_id == model.image_token_id < config["vocab_size"]
    assert spec.llm_architecture == "LlamaForCausalLM"


def test_weights_hold_the_llm_and_the_adapter(tiny, tmp_path):
    model = tiny.model()
    out = export_model(model, tmp_path / "out")
    state = load_file(out / "model.safetensors")
    for key, value in model.adapter.state_dict().items():
        torch.testing.assert_close(state[f"adapter.{key}"], value)
    embed = model.llm.get_input_embeddings().weight
    torch.testing.assert_close(state["model.embed_tokens.weight"], embed)
    assert (out / "chat_template.jinja").is_file() and (out / "tokenizer.json").is_file()


def test_fine_tuned_encoder_travels_in_the_export(tiny, tmp_path):
    frozen = export_model(tiny.model(), tmp_path / "frozen")
    assert not any(k.startswith("encoder.") for k in load_file(frozen / "model.safetensors"))
    model = tiny.model()
    model.unfreeze_encoder()
    with torch.no_grad():
        for p in model.encoder.parameters():
            p.add_(1.0)
    out = export_model(model, tmp_path / "tuned")
    spec = ServedSpec.from_config(json.loads((out / "config.json").read_text()))
    assert spec.encoder_finetuned
    state = load_file(out / "model.safetensors")
    for key, value in model.encoder_state().items():
        torch.testing.assert_close(state[f"encoder.{key}"], value)


def test_lora_is_merged_into_the_exported_llm(tiny, tmp_path):
    from peft import LoraConfig, get_peft_model

    model = tiny.model()
    model.llm = get_peft_model(model.llm, LoraConfig(r=4, target_modules=["q_proj"]))
    for name, p in model.llm.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p)  # a LoRA that changes the weights
    base = model.llm.get_base_model().model.layers[0].self_attn.q_proj
    expected = base.weight + base.get_delta_weight("default")
    state = load_file(export_model(model, tmp_path / "out") / "model.safetensors")
    torch.testing.assert_close(state["model.layers.0.self_attn.q_proj.weight"], expected)
    assert not any("lora" in k for k in state)


def test_w8a8_weights_dequantise_close_and_config_is_compressed_tensors():
    torch.manual_seed(0)
    w = torch.randn(16, 32)
    state = {"model.layers.0.mlp.up_proj.weight": w.clone(), "model.norm.weight": torch.ones(32)}
    config = quantize_w8a8(state)
    q, scale = (
        state["model.layers.0.mlp.up_proj.weight"],
        state["model.layers.0.mlp.up_proj.weight_scale"],
    )
    assert q.dtype == torch.int8 and scale.shape == (16, 1)
    # per-channel symmetric: the error is at most half a step of that row's scale
    assert ((q.float() * scale - w).abs() <= scale / 2 + 1e-6).all()
    assert q.abs().amax(dim=1).eq(127).all()  # each row uses the full range
    assert state["model.norm.weight"].dtype == torch.float32  # only the linear layers
    assert config["quant_method"] == "compressed-tensors" and config["format"] == "int-quantized"
    assert config["config_groups"]["group_0"]["input_activations"]["dynamic"] is True


def test_quantized_export_records_its_format(tiny, tmp_path):
    from mmllm.serving.quantization import checkpoint_quantization

    out = export_model(tiny.model(), tmp_path / "out", quantize="w8a8-dynamic")
    assert checkpoint_quantization(out) == "int-quantized"
    state = load_file(out / "model.safetensors")
    assert state["model.layers.0.self_attn.q_proj.weight"].dtype == torch.int8
    assert not any(k.endswith("input_scale") for k in state)  # scaled per token at run time


def test_static_w8a8_scales_come_from_image_and_text_calibration(tiny, tmp_path, images):
    from mmllm.data.dataset import Sample
    from mmllm.serving.export import calibrate_inputs

    question = {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Colour?"}]}
    samples = [Sample(messages=[question], images=[im]) for im in images]
    model = tiny.model()
    absmax = calibrate_inputs(model, samples)
    assert len(absmax) == 2 * 7  # 2 layers x 7 linear layers, every one seen
    # the recorded maximum is over whole prompts: image positions included
    text_only = calibrate_inputs(
        model, [Sample(messages=[{"role": "user", "content": "Colour?"}], images=[])]
    )
    assert any(absmax[k] > text_only[k] for k in absmax)
    out = export_model(model, tmp_path / "out", quantize="w8a8", calibration=samples)
    state = load_file(out / "model.safetensors")
    name = "model.layers.1.mlp.down_proj"
    torch.testing.assert_close(state[name + ".input_scale"], torch.tensor([absmax[name] / 127]))
    config = json.loads((out / "config.json").read_text())["quantization_config"]
    acts = config["config_groups"]["group_0"]["input_activations"]
    assert acts["dynamic"] is False and acts["strategy"] == "tensor"


@pytest.mark.parametrize(
    ("reduction", "words"),
    [
        ("fastv:layer=1,keep=4", "inside the LLM"),
        ("dpp:4", "text embeddings"),
        ("focus:4", "text embeddings"),
    ],
)
def test_unservable_reducers_are_refused(tiny, tmp_path, reduction, words):
    with pytest.raises(MMLLMError, match=words):
        export_model(tiny.model(reduction=reduction), tmp_path / "out")


def test_refuses_a_non_empty_folder_and_an_online_preset(tiny, tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "x").write_text("keep me")
    with pytest.raises(MMLLMError, match="not empty"):
        export_model(tiny.model(), tmp_path / "out")
    with pytest.raises(MMLLMError, match="online"):
        export_model(tiny.model(), tmp_path / "new", quantize="fp8")
    with pytest.raises(MMLLMError, match="unknown quantization preset"):
        export_model(tiny.model(), tmp_path / "new", quantize="int3")


def test_spec_without_block_is_a_clear_error():
    with pytest.raises(MMLLMError, match="mmllm export"):
        ServedSpec.from_config({"model_type": "llama"})


def test_keep_lora_exports_the_base_and_the_adapter_apart(tiny, tmp_path):
    from peft import LoraConfig, get_peft_model

    model = tiny.model()
    model.llm = get_peft_model(model.llm, LoraConfig(r=4, target_modules=["q_proj"]))
    for name, p in model.llm.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p)
    base = model.llm.get_base_model().model.layers[0].self_attn.q_proj.weight.detach().clone()
    out = export_model(model, tmp_path / "out", keep_lora=True)
    state = load_file(out / "model.safetensors")
    torch.testing.assert_close(state["model.layers.0.self_attn.q_proj.weight"], base)
    lora = load_file(out / "lora" / "adapter_model.safetensors")
    assert any("lora_B" in k for k in lora)
    assert json.loads((out / "lora" / "adapter_config.json").read_text())["r"] == 4


def test_keep_lora_needs_a_lora_and_no_quantization(tiny, tmp_path):
    with pytest.raises(MMLLMError, match="no LoRA"):
        export_model(tiny.model(), tmp_path / "a", keep_lora=True)
    with pytest.raises(MMLLMError, match="unquantized"):
        export_model(tiny.model(), tmp_path / "b", keep_lora=True, quantize="w8a8")
