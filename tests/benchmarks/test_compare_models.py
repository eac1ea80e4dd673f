"""benchmarks/compare_models.py: reads eval_default.py reports as percentages and draws the
chart; a missing report or a malformed argument is a clear exit."""

import json

import pytest


@pytest.fixture(scope="module")
def compare(load_script):
    return load_script("compare_models")


def write_report(folder, overall, per_task):
    folder.mkdir()
    (folder / "default_model.json").write_text(
        json.dumps({"overall": overall, "per_task": per_task})
    )


def test_reports_become_percentages_and_a_png(compare, tmp_path):
    write_report(tmp_path / "a", 0.5, {"count": 0.25, "text": 0.75})
    write_report(tmp_path / "b", 0.6, {"count": 0.5, "text": 0.7})
    label, scores = compare.load(f"one={tmp_path / 'a'}")
    assert label == "one" and scores == {"count": 25.0, "text": 75.0, "overall": 50.0}
    out = tmp_path / "chart.png"
    compare.plot([(label, scores), compare.load(f"two={tmp_path / 'b'}")], out, "t")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bad_arguments_exit_with_a_message(compare, tmp_path):
    with pytest.raises(SystemExit, match="LABEL=DIR"):
        compare.load(str(tmp_path))
    with pytest.raises(SystemExit, match="not found"):
        compare.load(f"x={tmp_path / 'missing'}")
