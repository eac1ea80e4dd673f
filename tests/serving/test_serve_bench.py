"""`mmllm bench serve` bookkeeping: speed-ups against the full-token server, files written."""

import json

import pytest

from mmllm.errors import MMLLMError
from mmllm.serving.bench import ServeBenchRow, run_serve_bench, speedups, write_serve_results


def row(reduction, tokens, clients, rps):
    return ServeBenchRow(reduction, tokens, clients, 16, 16 / rps, rps, 50.0, 45.0, rps * 16, 0)


def test_speedups_are_against_identity_at_the_same_concurrency():
    rows = [row("identity", 49, 1, 2.0), row("identity", 49, 8, 4.0),
            row("coverage:5", 5, 1, 3.0), row("coverage:5", 5, 8, 10.0)]  # fmt: skip
    assert speedups(rows) == {
        ("identity", 1): 1.0,
        ("identity", 8): 1.0,
        ("coverage:5", 1): 1.5,
        ("coverage:5", 8): 2.5,
    }


def test_results_files(tmp_path):
    rows = [row("identity", 49, 8, 4.0), row("coverage:5", 5, 8, 10.0)]
    md = write_serve_results(rows, tmp_path, "mmllm bench serve")
    text = md.read_text()
    assert "| `coverage:5` | 5 | 8 | 16 | 10.00 | 2.50x |" in text
    assert len(json.loads((tmp_path / "serve.json").read_text())) == 2
    assert (tmp_path / "serve.png").stat().st_size > 0


def test_unservable_budget_fails_before_any_server_starts(tmp_path):
    with pytest.raises(MMLLMError, match="inside the LLM"):
        run_serve_bench(["identity", "fastv:layer=2,keep=8"], log_dir=tmp_path)
