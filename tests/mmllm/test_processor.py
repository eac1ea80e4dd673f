import pytest

from mmllm.errors import ImageError, MMLLMError
from mmllm.processor import MMLLMProcessor


@pytest.fixture
def proc(tiny):
    return MMLLMProcessor.from_model(tiny.model("qwen2"))


def user(*parts):
    return {"role": "user", "content": list(parts)}


IMG, TXT = {"type": "image"}, {"type": "text", "text": "Compare them."}


def test_several_images_and_multi_turn(proc, images):
    conv = [
        user(IMG, TXT),
        {"role": "assistant", "content": [{"type": "text", "text": "ok"}]},
        user(IMG, {"type": "text", "text": "And this?"}),
    ]
    batch = proc([conv], [images])
    assert batch["pixel_values"].shape[0] == 2
    text = proc.render(conv, add_generation_prompt=True)
    assert text.count("<|image|>") == 2 * 16 and text.endswith("<|im_start|>assistant\n")


@pytest.mark.parametrize(
    ("conv", "n_images", "message"),
    [
        ([user(IMG, IMG, TXT)], 1, "2 image part"),
        ([user(TXT)], 1, "0 image part"),
        ([user({"type": "text", "text": "   "})], 0, "empty"),
        ([{"role": "user", "content": []}], 0, "empty"),
        ([], 0, "empty conversation"),
        ([user({"type": "audio"})], 0, "unknown content part"),
        ([{"role": "robot", "content": "hi"}], 0, "role must be"),
    ],
)
def test_bad_conversations(proc, images, conv, n_images, message):
    with pytest.raises(MMLLMError, match=message):
        proc([conv], [images[:n_images]])


def test_corrupt_image_is_a_clear_error(proc):
    with pytest.raises(ImageError, match="not a readable image"):
        proc([[user(IMG, TXT)]], [[b"garbage"]])


def test_training_needs_an_answer(proc, images):
    with pytest.raises(MMLLMError, match="end with the assistant"):
        proc([[user(IMG, TXT)]], [images[:1]], train=True)


def test_render_needs_no_earlier_call_and_takes_a_placeholder_count(tiny, images):
    fresh = MMLLMProcessor.from_model(tiny.model("qwen2"))
    conv = [user(IMG, TXT), user(IMG, TXT)]
    assert fresh.render(conv, add_generation_prompt=False).count("<|image|>") == 2 * 16
    assert fresh.render(conv, False, image_seq_len=4).count("<|image|>") == 2 * 4
    # a reduced-budget call does not change what the next default call renders
    batch = fresh([[user(IMG, TXT)]], [images[:1]], image_seq_len=4)
    assert (
        int((batch["input_ids"] == fresh.tokenizer.convert_tokens_to_ids("<|image|>")).sum()) == 4
    )
    assert fresh.render(conv, False).count("<|image|>") == 2 * 16


def answer(text):
    return {"role": "assistant", "content": [{"type": "text", "text": text}]}


def test_training_labels_every_assistant_turn(proc, images):
    conv = [
        user(IMG, TXT),
        answer("a red circle"),
        user({"type": "text", "text": "And the square?"}),
        answer("blue"),
    ]
    batch = proc([conv], [images[:1]], train=True)
    ids, labels = batch["input_ids"][0], batch["labels"][0]
    # the ids are the whole conversation as the template renders it
    assert proc.tokenizer.decode(ids) == proc.render(conv, False)
    # the labelled spans decode to exactly the two answers with their end tokens
    spans, current = [], []
    for token, label in zip(ids.tolist(), labels.tolist(), strict=True):
        if label == -100:
            if current:
                spans.append(current)
            current = []
        else:
            assert label == token
            current.append(token)
    spans.append(current)
    texts = [proc.tokenizer.decode(s) for s in spans]
    assert texts == ["a red circle<|im_end|>\n", "blue<|im_end|>\n"]


def test_one_turn_training_labels_are_the_scored_answer(proc, images):
    conv = [user(IMG, TXT), answer("a red circle")]
    batch = proc([conv], [images[:1]], train=True)
    labels = batch["labels"][0]
    answer_ids, _ = proc.answer_ids([conv])
    assert labels[labels != -100].tolist() == answer_ids[0].tolist()
    prompt = proc([conv[:-1]], [images[:1]])["input_ids"][0]
    assert batch["input_ids"][0, : len(prompt)].tolist() == prompt.tolist()


def test_template_that_is_not_a_concatenation_of_turns_is_a_clear_error(proc, images):
    counted = MMLLMProcessor(
        proc.tokenizer,
        proc.image_size,
        proc.mean,
        proc.std,
        proc.image_seq_len,
        chat_template="{{ messages | length }}" + proc.chat_template,
    )
    conv = [user(IMG, TXT), answer("a"), user(TXT), answer("b")]
    for call in (
        lambda: counted([conv], [images[:1]], train=True),
        lambda: counted([conv[:2]], [images[:1]], train=True),
        lambda: counted.answer_ids([conv[:2]]),  # scoring would slice the wrong tokens
    ):
        with pytest.raises(MMLLMError, match="concatenation of its turns"):
            call()
