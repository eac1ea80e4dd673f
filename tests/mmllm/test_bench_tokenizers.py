import json

import pytest

from mmllm.bench_tokenizers import bits_per_token, run_tokenizer_bench
from mmllm.data.generate import make_dataset
from mmllm.vision_tokenizers.quantizers import build_quantizer

pytestmark = pytest.mark.slow


def test_bits_per_token_counts_stages_and_groups():
    assert bits_per_token(build_quantizer("fsq", levels=[8, 8, 4, 4])) == 10
    assert (
        bits_per_token(build_quantizer("rvq", stage="fsq", num_stages=2, levels=[4, 2, 2, 2])) == 10
    )
    assert bits_per_token(build_quantizer("group", dim=12, groups=3)) == 12
    assert bits_per_token(build_quantizer("vq", dim=4, codebook_size=1024)) == 10


def test_bench_writes_rows_table_and_plot(tmp_path):
    make_dataset(tmp_path / "data", 4, seed=5, split="train", progress=False)
    rows = run_tokenizer_bench(
        tmp_path / "data",
        tmp_path / "data",
        tmp_path / "out",
        ["2d-fsq-64", "1d-fsq-16"],
        1,
        smoke=True,
    )
    assert [r["bits_per_image"] for r in rows] == [640, 160]
    assert all(r["psnr"] > 0 and 0 < r["codebook_usage"] <= 1 for r in rows)
    assert json.loads((tmp_path / "out" / "tokenizers.json").read_text()) == rows
    assert (tmp_path / "out" / "tokenizers.png").is_file()
    assert "| 2d-fsq-64 |" in (tmp_path / "out" / "tokenizers.md").read_text()
    # the 1D tokenizer is also scored on every power-of-two prefix of its 16 tokens
    curve = rows[1]["prefix_psnr"]
    assert [p["tokens"] for p in curve] == [1, 2, 4, 8, 16] and all(p["psnr"] > 0 for p in curve)
    assert curve[-1]["psnr"] == pytest.approx(rows[1]["psnr"], abs=1e-3)
    assert "- 1d-fsq-16: 1: " in (tmp_path / "out" / "tokenizers.md").read_text()


def test_resume_scores_finished_runs_and_retrains_changed_ones(tmp_path):
    make_dataset(tmp_path / "data", 4, seed=5, split="train", progress=False)
    args = (tmp_path / "data", tmp_path / "data", tmp_path / "out", ["2d-fsq-16"])
    first = run_tokenizer_bench(*args, 1, smoke=True, channels=8)
    weights = tmp_path / "out" / "runs" / "2d-fsq-16" / "final" / "model.safetensors"
    stamp = weights.stat().st_mtime_ns
    again = run_tokenizer_bench(*args, 1, smoke=True, channels=8, resume=True)
    assert again == first and weights.stat().st_mtime_ns == stamp  # scored, not retrained
    changed = run_tokenizer_bench(*args, 2, smoke=True, channels=8, resume=True)
    assert changed[0]["steps"] == 2 and weights.stat().st_mtime_ns != stamp


def test_legibility_scores_originals_and_reconstructions(tmp_path, tiny):
    from mmllm.data.dataset import load_dataset
    from mmllm.tokenizer_legibility import legibility, reconstruct
    from mmllm.vision_tokenizers.discrete import TokenizerConfig, build_tokenizer

    make_dataset(
        tmp_path / "d", 6, seed=2, split="test", tasks=["text", "small_object"], progress=False
    )
    samples = load_dataset(tmp_path / "d")
    tokenizer = build_tokenizer(TokenizerConfig(image_size=32, channels=8, latent_dim=4))
    from PIL import Image

    image = Image.open(samples[0].images[0])
    assert reconstruct(tokenizer, image).size == image.size
    report = legibility(tokenizer, tiny.model(), samples)
    assert report["n"] == 6
    assert set(report["original"]) == set(report["reconstructed"]) == {"text", "small_object"}
    assert 0 <= report["kept"] <= 100


def test_bench_adds_legibility_columns(tmp_path, tiny):
    make_dataset(tmp_path / "data", 4, seed=5, split="train", progress=False)
    make_dataset(
        tmp_path / "detail", 4, seed=2, split="test", tasks=["text", "small_object"], progress=False
    )
    rows = run_tokenizer_bench(
        tmp_path / "data",
        tmp_path / "data",
        tmp_path / "out",
        ["2d-fsq-16"],
        1,
        smoke=True,
        channels=8,
        legibility_data=tmp_path / "detail",
        legibility_n=4,
        judge=tiny.model(),
    )
    assert rows[0]["legibility"]["n"] == 4
    assert "judge on reconstructions %" in (tmp_path / "out" / "tokenizers.md").read_text()
