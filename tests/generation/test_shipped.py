"""The generator shipped in the package loads and draws with no flags (`mmllm generate`)."""

import pytest
from PIL import Image

from mmllm.cli import main
from mmllm.generation.model import ImageGenerator

pytestmark = pytest.mark.slow


def test_shipped_generator_draws_after_install(tmp_path):
    generator = ImageGenerator.from_pretrained()
    assert generator.num_image_tokens == 64 and generator.num_codes == 1000
    assert hasattr(generator.llm, "peft_config")
    with pytest.raises(SystemExit) as code:
        main(["generate", "a red circle", "--out", str(tmp_path / "c.png"), "--cfg", "1"])
    assert code.value.code in (0, None)
    assert Image.open(tmp_path / "c.png").size == (256, 256)
