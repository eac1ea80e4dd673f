"""mmllm.ship: a checkpoint replaces the shipped files; anything else is refused before a file
is removed (``python -m mmllm.ship --help`` once deleted the shipped model)."""

import subprocess
import sys

import pytest
import torch
from safetensors.torch import save_file

from mmllm.errors import MMLLMError
from mmllm.ship import ship


def shipped(folder):
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    save_file({"w": torch.zeros(1)}, folder / "adapter.safetensors")
    return folder


def test_a_checkpoint_replaces_the_shipped_files(tmp_path):
    target = shipped(tmp_path / "target")
    checkpoint = shipped(tmp_path / "final")
    (checkpoint / "config.json").write_text('{"new": true}')
    (checkpoint / "optimizer.pt").write_text("not copied")  # training state stays behind
    with pytest.raises(MMLLMError, match="pickled"):
        ship(checkpoint, target)
    (checkpoint / "optimizer.pt").unlink()
    assert ship(checkpoint, target) == target
    assert (target / "config.json").read_text() == '{"new": true}'


@pytest.mark.parametrize("bad", ["--help", "missing", "empty"])
def test_bad_checkpoints_leave_the_shipped_files(tmp_path, bad):
    target = shipped(tmp_path / "target")
    (tmp_path / "empty").mkdir()
    with pytest.raises(MMLLMError, match="not a trained model folder"):
        ship(tmp_path / bad, target)
    assert sorted(p.name for p in target.iterdir()) == ["adapter.safetensors", "config.json"]


def test_command_line_help_and_errors(tmp_path):
    run = [sys.executable, "-m", "mmllm.ship"]
    help_text = subprocess.run([*run, "--help"], capture_output=True, text=True, check=True)
    assert "checkpoint" in help_text.stdout
    target = shipped(tmp_path / "target")
    failed = subprocess.run([*run, str(tmp_path / "nope"), str(target)], capture_output=True,
                            text=True)  # fmt: skip
    assert failed.returncode == 2 and "not a trained model folder" in failed.stderr
    assert (target / "config.json").is_file()
