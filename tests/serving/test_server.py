"""`mmllm serve`'s vLLM command line: safe defaults, overrides, presets, scale-out plumbing."""

import json

import pytest

from mmllm.errors import MMLLMError
from mmllm.serving.export import export_model
from mmllm.serving.quantization import resolve_preset
from mmllm.serving.server import NO_REMOTE_MEDIA, ServeOptions, is_exported, vllm_command


@pytest.fixture
def exported(tiny, tmp_path):
    return export_model(tiny.model(reduction="pool:2x2"), tmp_path / "plain")


@pytest.fixture
def exported_int8(tiny, tmp_path):
    return export_model(tiny.model(), tmp_path / "int8", quantize="w8a8-dynamic")


def arg(cmd: list[str], flag: str, n: int = 1):
    i = cmd.index(flag)
    return cmd[i + 1] if n == 1 else cmd[i + 1 : i + 1 + n]


def test_defaults_are_safe(exported):
    cmd = vllm_command(ServeOptions(), exported)
    assert cmd[1:3] == ["-m", "vllm.entrypoints.openai.api_server"]
    assert arg(cmd, "--model") == str(exported) and is_exported(exported)
    assert arg(cmd, "--host") == "127.0.0.1"  # loopback unless asked
    assert arg(cmd, "--allowed-media-domains") == NO_REMOTE_MEDIA  # no downloads
    assert arg(cmd, "--middleware") == "mmllm.serving.guard.RequestGuard"
    assert json.loads(arg(cmd, "--limit-mm-per-prompt")) == {"image": 4}
    assert arg(cmd, "--dtype") == "float32"  # on CPU, as local chat
    assert "--hf-overrides" not in cmd and "--quantization" not in cmd


def test_reduction_override_rewrites_only_the_reducer(exported):
    config = json.loads((exported / "config.json").read_text())
    cmd = vllm_command(ServeOptions(reduction="divprune:3"), exported)
    block = json.loads(arg(cmd, "--hf-overrides"))["mmllm"]
    assert block == config["mmllm"] | {"reduction": "divprune:3"}


@pytest.mark.parametrize(
    ("reduction", "words"),
    [
        ("nosuch:3", "unknown"),
        ("fastv:layer=1,keep=4", "inside the LLM"),
        ("dpp:4", "text"),
        ("focus:4", "text"),
    ],
)
def test_bad_reduction_fails_before_launch(exported, reduction, words):
    with pytest.raises(MMLLMError, match=words):
        vllm_command(ServeOptions(reduction=reduction), exported)


def test_media_allow_list_and_limits(exported):
    opts = ServeOptions(allow_media_domains=["images.example.org", "cdn.example.org"], max_images=2)
    cmd = vllm_command(opts, exported)
    assert arg(cmd, "--allowed-media-domains", 2) == ["images.example.org", "cdn.example.org"]
    assert json.loads(arg(cmd, "--limit-mm-per-prompt")) == {"image": 2}
    with pytest.raises(MMLLMError, match="max-images"):
        vllm_command(ServeOptions(max_images=0), exported)
    with pytest.raises(MMLLMError, match="port"):
        vllm_command(ServeOptions(port=70000), exported)


def test_scale_out_arguments_reach_vllm(exported):
    opts = ServeOptions(
        tensor_parallel_size=4,
        pipeline_parallel_size=2,
        data_parallel_size=2,
        nnodes=2,
        node_rank=1,
        master_addr="10.0.0.1",
        extra=["--max-num-seqs", "64"],
    )
    cmd = vllm_command(opts, exported)
    assert arg(cmd, "--tensor-parallel-size") == "4"
    assert arg(cmd, "--pipeline-parallel-size") == "2"
    assert arg(cmd, "--data-parallel-size") == "2"
    assert (arg(cmd, "--nnodes"), arg(cmd, "--node-rank"), arg(cmd, "--master-addr")) == (
        "2",
        "1",
        "10.0.0.1",
    )
    assert cmd[-2:] == ["--max-num-seqs", "64"]
    with pytest.raises(MMLLMError, match="master-addr"):
        vllm_command(ServeOptions(nnodes=2), exported)


def test_quantization_presets(exported, exported_int8, monkeypatch):
    from mmllm.serving import server

    assert resolve_preset("fp8", "cuda", exported) == ["--quantization", "fp8_per_channel"]
    with pytest.raises(MMLLMError, match=r"does not run on cpu.*reference kernel.*w8a8"):
        resolve_preset("fp8", "cpu", exported)  # says why, and what to use instead
    assert resolve_preset("int8", "cpu", exported_int8) == []  # vLLM reads the checkpoint
    with pytest.raises(MMLLMError, match="mmllm export"):
        resolve_preset("w8a8", "cpu", exported)  # needs a quantized export
    with pytest.raises(MMLLMError, match="already quantized"):
        resolve_preset("fp8", "cuda", exported_int8)
    with pytest.raises(MMLLMError, match="does not run on tpu"):
        resolve_preset("fp8", "tpu", exported)
    with pytest.raises(MMLLMError, match="unknown quantization preset"):
        resolve_preset("nf3", "cpu", exported)
    monkeypatch.setattr(server, "_device", lambda: "cuda")
    cmd = vllm_command(ServeOptions(quantization="fp8"), exported)
    assert arg(cmd, "--quantization") == "fp8_per_channel"
    assert arg(cmd, "--dtype") == "bfloat16"  # vLLM refuses fp8 with float32


@pytest.mark.parametrize("amx", [False, True])
def test_int8_serves_in_bf16_on_amx_cpus(exported_int8, monkeypatch, amx):
    """vLLM's AMX int8 kernel takes only bf16/fp16 activations: on AMX CPUs an int8 checkpoint,
    with or without the preset named, serves in bf16; elsewhere in fp32 like local chat."""
    from mmllm.serving import quantization

    monkeypatch.setattr(quantization, "cpu_has_amx", lambda: amx)
    want = "bfloat16" if amx else "float32"
    for opts in (ServeOptions(quantization="w8a8-dynamic"), ServeOptions()):
        assert arg(vllm_command(opts, exported_int8), "--dtype") == want
    assert quantization.compute_dtype(None, "cpu", None) == "float32"  # plain models: fp32
    assert quantization.compute_dtype(None, "cuda", "int-quantized") == "bfloat16"
    cmd = vllm_command(ServeOptions(quantization="int8", dtype="float16"), exported_int8)
    assert arg(cmd, "--dtype") == "float16"  # an explicit --dtype wins


def test_serve_dry_run_prints_the_command(exported, capsys):
    from mmllm.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["serve", str(exported), "--dry-run", "--port", "8011", "-tp", "2"])
    assert exit_info.value.code == 0
    cmd = json.loads(capsys.readouterr().out)
    assert arg(cmd, "--port") == "8011" and arg(cmd, "--tensor-parallel-size") == "2"


def test_missing_vllm_is_a_clear_error(monkeypatch):
    import importlib.util

    from mmllm.serving import server

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "vllm" else real(name, *a)
    )
    with pytest.raises(MMLLMError, match=r"mmllm\[serve\]"):
        server.check_vllm_installed()


def test_kept_lora_is_served_under_the_model_name(tiny, tmp_path):
    from peft import LoraConfig, get_peft_model

    model = tiny.model()
    model.llm = get_peft_model(model.llm, LoraConfig(r=8, target_modules=["q_proj"]))
    folder = export_model(model, tmp_path / "lora", keep_lora=True)
    cmd = vllm_command(ServeOptions(), folder)
    assert arg(cmd, "--served-model-name") == "mmllm-base"
    assert "--enable-lora" in cmd and arg(cmd, "--max-lora-rank") == "8"
    assert arg(cmd, "--lora-modules") == f"mmllm={folder / 'lora'}"
