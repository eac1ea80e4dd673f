"""benchmarks/kernels.py: rows carry the measured and derived columns, a failing case is
recorded with its error instead of ending the run, and a stored table re-renders."""

import json
import sys

import pytest
import torch


@pytest.fixture(scope="module")
def bench(load_script):
    return load_script("kernels")


TINY = {"B": (2,), "N": (18,), "D": (8,)}


def test_rows_have_times_and_floors(bench):
    rows, meta = bench.run(torch.device("cpu"), TINY, progress=False, min_s=0.0)
    assert [r["op"] for r in rows] == [
        "divprune (cosine + greedy max-min)",
        "tome (match + merge)",
        "tome merge (given the match)",
        "score + top-k + gather",
        "dpp greedy MAP",
    ]
    for row in rows:
        assert row["ref_ms"] > 0 and row["fast_ms"] > 0
        half = 0.5e-4  # times are stored to 0.1 µs, the speed-up to 0.01: compare within that
        low = (row["ref_ms"] - half) / (row["fast_ms"] + half)
        high = (row["ref_ms"] + half) / (row["fast_ms"] - half)
        assert low - 0.005 <= row["speedup"] <= high + 0.005
        nbytes, _ = bench.work(row["op"], 2, 18, 8)
        assert row["MB_moved"] == round(nbytes / 1e6, 2)
        assert row["floor_ms"] == max(row["mem_floor_ms"], row["compute_floor_ms"])
    assert meta["peak_fp32_TFLOPs"] > 0 and meta["peak_GBps"] > 0


def test_a_failing_case_is_recorded_and_the_run_goes_on(bench, monkeypatch):
    real = bench.cases

    def cases_with_a_broken_one(b, n, d, device):
        for i, (op, ref, fast) in enumerate(real(b, n, d, device)):
            if i == 1:

                def fast():
                    raise RuntimeError("kernel failed to compile")

            yield op, ref, fast

    monkeypatch.setattr(bench, "cases", cases_with_a_broken_one)
    rows, meta = bench.run(torch.device("cpu"), TINY, progress=False, min_s=0.0)
    assert len(rows) == 5
    assert rows[1]["error"] == "RuntimeError: kernel failed to compile"
    assert all("error" not in r for i, r in enumerate(rows) if i != 1)
    table = bench.markdown(rows, meta, "cmd")
    assert "error: RuntimeError: kernel failed to compile" in table


def test_stored_table_re_renders(bench, tmp_path, monkeypatch):
    rows, meta = bench.run(torch.device("cpu"), TINY, progress=False, min_s=0.0)
    bench.write(tmp_path, "cpu", rows, meta, "python benchmarks/kernels.py --device cpu")
    stored = tmp_path / "kernels_cpu.json"
    before = json.loads(stored.read_text())
    monkeypatch.setattr(sys, "argv", ["kernels.py", "--from-json", str(stored)])
    bench.main()
    after = json.loads(stored.read_text())
    assert after["rows"] == before["rows"] and after["command"] == before["command"]
    assert (tmp_path / "kernels_cpu.png").stat().st_size > 0
    assert "python benchmarks/kernels.py --device cpu" in (tmp_path / "kernels_cpu.md").read_text()
