import json

import pytest
from PIL import Image

from mmllm.data.dataset import load_dataset
from mmllm.errors import DataFormatError

GOOD = {
    "messages": [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What colour?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "red"}]},
    ],
    "images": ["images/a.png"],
    "answer": "red",
    "task": "colour",
}


def write(folder, *rows, raw: str = ""):
    (folder / "images").mkdir(exist_ok=True)
    Image.new("RGB", (8, 8), "red").save(folder / "images" / "a.png")
    text = "".join(json.dumps(r) + "\n" for r in rows) + raw
    (folder / "data.jsonl").write_text(text)
    return folder


def test_good_folder_loads(tmp_path):
    [sample] = load_dataset(write(tmp_path, GOOD))
    assert sample.images[0].is_file() and sample.answer == "red"
    assert sample.question == "What colour?" and sample.prompt_messages()[-1]["role"] == "user"


def test_malformed_json_names_file_and_line(tmp_path):
    with pytest.raises(DataFormatError, match=r"data.jsonl:2: malformed JSON"):
        load_dataset(write(tmp_path, GOOD, raw='{"messages": [\n'))


def test_missing_image(tmp_path):
    row = dict(GOOD, images=["images/missing.png"])
    with pytest.raises(DataFormatError, match=r"image 'images/missing\.png' not found"):
        load_dataset(write(tmp_path, row))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"images": []}, "1 image part"),
        ({"messages": []}, "non-empty list"),
        ({"messages": [{"role": "bot", "content": "x"}]}, "needs a 'role'"),
        (
            {"messages": [{"role": "user", "content": [{"type": "video"}]}], "images": []},
            "unknown content part",
        ),
        ({"answer": 3}, "'answer' must be a string"),
        ({"regions": [{"box": [0, 0, 1, 1], "text": "red"}]}, "one list per image"),
        ({"regions": [[{"box": [0.5, 0, 0.2, 1], "text": "red"}]]}, "0 <= x0 < x1 <= 1"),
        ({"regions": [[{"box": [0, 0, 1], "text": "red"}]]}, "regions"),
        ({"regions": [[{"box": [0, 0, 1, 1], "text": " "}]]}, "regions"),
        ({"regions": [[], []]}, "one list per image"),
    ],
)
def test_malformed_rows(tmp_path, change, message):
    with pytest.raises(DataFormatError, match=message):
        load_dataset(write(tmp_path, dict(GOOD, **change)))


def test_empty_or_missing_folder(tmp_path):
    with pytest.raises(DataFormatError, match=r"no \*\.jsonl"):
        load_dataset(tmp_path)
    with pytest.raises(DataFormatError, match="no such data folder"):
        load_dataset(tmp_path / "nope")


def test_regions_load_with_the_sample(tmp_path):
    regions = [[{"box": [0.1, 0.2, 0.5, 0.6], "text": "red circle"}]]
    [sample] = load_dataset(write(tmp_path, dict(GOOD, regions=regions)))
    assert sample.regions == regions and "regions" not in sample.extra
