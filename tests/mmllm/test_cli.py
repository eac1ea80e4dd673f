import json
import subprocess
import sys

import pytest

from mmllm.cli import main


def run(capsys, *argv):
    with pytest.raises(SystemExit) as exit_info:
        main(list(argv))
    out = capsys.readouterr()
    return exit_info.value.code, out.out, out.err


def test_help_everywhere(capsys):
    for argv in ([], ["--help"], ["data", "--help"], ["reducers", "--help"], ["demo", "--help"]):
        code, out, _ = run(capsys, *argv)
        assert code in (0, 2) and "Usage" in out


def test_data_make_help_lists_every_task(capsys):
    from mmllm.data.tasks import TASKS

    _, out, _ = run(capsys, "data", "make", "--help")
    for name in TASKS:
        assert name in out


def test_reducers_lists_registry(capsys):
    code, out, _ = run(capsys, "reducers", "--json")
    assert code == 0
    names = {r["name"] for r in json.loads(out)}
    assert {"identity", "random", "pool"} <= names
    code, out, _ = run(capsys, "reducers")
    assert code == 0 and "pool" in out and "paper" in out


def test_data_make_and_check(tmp_path, capsys):
    code, out, _ = run(capsys, "data", "make", "--out", str(tmp_path), "--n", "9", "--split", "val")
    assert code == 0 and (tmp_path / "val.jsonl").is_file()
    code, out, _ = run(capsys, "data", "check", str(tmp_path))
    assert code == 0 and "9 valid samples" in out


def test_data_tasks_marks_held_out_and_training_only_wordings(capsys):
    from mmllm.data.tasks import TASKS

    code, out, _ = run(capsys, "data", "tasks")
    assert code == 0 and "held out of training" in out and "training only" in out
    assert TASKS["exists"].phrasings["negated"].extra[0] in out


def test_data_make_dense_writes_multi_turn_rows(tmp_path, capsys):
    argv = ["data", "make", "--out", str(tmp_path), "--n", "8", "--tasks", "colour", "--dense"]
    code, _, _ = run(capsys, *argv)
    rows = [json.loads(line) for line in (tmp_path / "train.jsonl").read_text().splitlines()]
    assert code == 0 and max(len(r["messages"]) for r in rows) > 2
    code, out, _ = run(capsys, "data", "check", str(tmp_path))
    assert code == 0 and "8 valid samples" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["data", "make", "--out", "/tmp/x", "--split", "dev"], "split must be"),
        (["data", "check", "/nonexistent"], "no such data folder"),
        (["demo", "--reduction", "divprun:4"], "unknown reducer"),
        (["data", "make", "--out", "/tmp/x", "--split", "val", "--phrasings", "wide"], "wide"),
    ],
)
def test_user_errors_are_one_line(capsys, argv, message):
    code, _, err = run(capsys, *argv)
    assert code == 1
    assert err.startswith("error: ") and message in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_console_script_reports_user_error_without_traceback(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "mmllm.cli", "data", "check", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: ") and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_demo_runs_end_to_end_on_the_shipped_model():
    from rich.console import Console

    from mmllm.demo import DEMO_TASKS, PHOTO_QUESTIONS, run_demo

    records = run_demo(None, "divprune:16", 8, Console(file=sys.stdout, width=200))
    assert len(records) == len(DEMO_TASKS) + len(PHOTO_QUESTIONS)
    assert all(r["full"] and r["reduced"] for r in records)
    assert all(r["full_ms"] > 0 and r["reduced_ms"] > 0 for r in records)
