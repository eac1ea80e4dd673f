"""Chat messages with images -> model inputs (token ids with expanded image placeholders, pixels).

Messages follow the HF convention: ``{"role": ..., "content": [{"type": "image"}, {"type":
"text", "text": ...}]}``, several images per conversation and multi-turn history allowed. Each
image part becomes ``image_seq_len`` placeholder tokens, the count the model's reducer and adapter
promise (``model.num_image_tokens()``), so it is known before any pixel is encoded.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch
from transformers import AutoTokenizer

from mmllm.errors import MMLLMError
from mmllm.modeling import IMAGE_TOKEN
from mmllm.vision_tokenizers.images import ImageLike, to_pixels

PROCESSOR_FILE = "processor_config.json"

#: ChatML with image parts rendered as one placeholder each (expanded after rendering).
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}" + IMAGE_TOKEN + "{% elif part['type'] == 'text' %}"
    "{{ part['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def check_conversation(messages: Sequence[dict], n_images: int) -> None:
    """Refuse malformed conversations with a message naming the problem."""
    if not messages:
        raise MMLLMError("empty conversation: give at least one user message")
    image_parts = 0
    for i, message in enumerate(messages):
        if message.get("role") not in ("system", "user", "assistant"):
            raise MMLLMError(f"message {i}: role must be system, user or assistant")
        content = message.get("content")
        if isinstance(content, str):
            content = [{"type": "text", "text": content}]
        if not content:
            raise MMLLMError(f"message {i} is empty: give text or an image")
        for part in content:
            kind = part.get("type") if isinstance(part, dict) else None
            if kind == "image":
                image_parts += 1
            elif kind != "text":
                raise MMLLMError(f"message {i}: unknown content part {part!r} (use image or text)")
        texts = [p.get("text", "") for p in content if p.get("type") == "text"]
        if not any(t.strip() for t in texts) and not any(p.get("type") == "image" for p in content):
            raise MMLLMError(f"message {i} is empty: give text or an image")
    if image_parts != n_images:
        raise MMLLMError(
            f"the conversation has {image_parts} image part(s) but {n_images} image(s) were given"
        )


def _check_ends_with_answer(messages: Sequence[dict]) -> None:
    if messages[-1]["role"] != "assistant":
        raise MMLLMError(
            "the conversation must end with the assistant's answer (the reference to train on "
            "or score)"
        )


def _not_concatenated() -> MMLLMError:
    return MMLLMError(
        "the chat template does not render a conversation as the concatenation of its turns, "
        "so an assistant turn's tokens cannot be told apart from the prompt's"
    )


class MMLLMProcessor:
    """Tokenizer + image preprocessing + chat template for an mmllm model."""

    def __init__(
        self,
        tokenizer,
        image_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        image_seq_len: int,
        image_token: str = IMAGE_TOKEN,
        chat_template: str = CHAT_TEMPLATE,
    ):
        self.tokenizer = tokenizer
        self.image_size, self.mean, self.std = image_size, tuple(mean), tuple(std)
        self.image_seq_len = image_seq_len
        self.image_token = image_token
        self.chat_template = chat_template
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token

    @classmethod
    def from_model(cls, model) -> MMLLMProcessor:
        enc = model.encoder
        return cls(
            model.tokenizer,
            enc.image_size,
            enc.mean,
            enc.std,
            model.num_image_tokens(),
            model.config.image_token,
        )

    def render(
        self,
        messages: Sequence[dict],
        add_generation_prompt: bool,
        image_seq_len: int | None = None,
    ) -> str:
        """The chat-template text, each image part expanded to ``image_seq_len`` placeholders
        (default: the model's count)."""
        text = self.tokenizer.apply_chat_template(
            list(messages),
            chat_template=self.chat_template,
            tokenize=False,
            add_generation_prompt=add_generation_prompt,
        )
        return text.replace(
            self.image_token, self.image_token * (image_seq_len or self.image_seq_len)
        )

    def prompt_length(self, messages: Sequence[dict], image_seq_len: int | None = None) -> int:
        """Tokens of the generation prompt for ``messages`` (what ``__call__`` gives one row)."""
        return len(self._ids(self.render(messages, True, image_seq_len)))

    def _ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def __call__(
        self,
        conversations: Sequence[Sequence[dict]],
        images: Sequence[Sequence[ImageLike]],
        *,
        train: bool = False,
        image_seq_len: int | None = None,
    ) -> dict[str, torch.Tensor]:
        """Batch of conversations -> ``input_ids``, ``attention_mask``, ``pixel_values`` (+ labels).

        With ``train=True`` the last message must be the assistant's; every assistant message is
        labelled (its text and end token), everything else is not, so a multi-turn conversation
        trains on all of its answers in one pass over the image.
        Otherwise a generation prompt is appended and the batch is left-padded for ``generate``.
        """
        if len(conversations) != len(images):
            raise MMLLMError(f"{len(conversations)} conversations but {len(images)} image lists")
        seq_len = image_seq_len or self.image_seq_len
        rows, label_rows = [], []
        for messages, imgs in zip(conversations, images, strict=True):
            check_conversation(messages, len(imgs))
            if train:
                ids, labels = self._train_ids(messages, seq_len)
                rows.append(ids)
                label_rows.append(labels)
            else:
                rows.append(self._ids(self.render(messages, True, seq_len)))
        width = max(len(r) for r in rows)
        pad = self.tokenizer.pad_token_id
        left = not train
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        labels = torch.full((len(rows), width), -100, dtype=torch.long)
        for i, row in enumerate(rows):
            span = slice(width - len(row), width) if left else slice(0, len(row))
            ids[i, span] = torch.tensor(row)
            mask[i, span] = 1
            if train:
                labels[i, span] = torch.tensor(label_rows[i])
        flat = [im for imgs in images for im in imgs]
        out = {"input_ids": ids, "attention_mask": mask}
        out["pixel_values"] = (
            to_pixels(flat, self.image_size, self.mean, self.std) if flat else None
        )
        if train:
            out["labels"] = labels
        return out

    def _train_ids(
        self, messages: Sequence[dict], image_seq_len: int | None
    ) -> tuple[list[int], list[int]]:
        """Ids of a whole conversation and its labels: every assistant message, nothing else.

        Each turn is tokenised as ``_answer_ids`` tokenises the last one (prompt and answer
        apart), so a one-turn conversation gets exactly the tokens that scoring uses.
        """
        _check_ends_with_answer(messages)
        ids: list[int] = []
        labels: list[int] = []
        done = ""
        for j, message in enumerate(messages):
            if message["role"] != "assistant":
                continue
            prompt, full = self._turn(messages, j, image_seq_len)
            if not prompt.startswith(done):
                raise _not_concatenated()
            question = self._ids(prompt[len(done) :])
            answer = self._ids(full[len(prompt) :])
            ids += question + answer
            labels += [-100] * len(question) + answer
            done = full
        return ids, labels

    def _answer_ids(self, messages: Sequence[dict], image_seq_len: int | None = None) -> list[int]:
        """Token ids of the final assistant message as training labels them (answer + end)."""
        _check_ends_with_answer(messages)
        prompt, full = self._turn(messages, len(messages) - 1, image_seq_len)
        return self._ids(full[len(prompt) :])

    def _turn(self, messages: Sequence[dict], j: int, image_seq_len: int | None) -> tuple[str, str]:
        """Rendered text up to assistant message ``j`` (with the generation prompt) and through
        it; the answer is what the second adds to the first."""
        prompt = self.render(messages[:j], True, image_seq_len)
        full = self.render(messages[: j + 1], False, image_seq_len)
        if not full.startswith(prompt):
            raise _not_concatenated()
        return prompt, full

    def answer_ids(
        self, conversations: Sequence[Sequence[dict]]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Each conversation's final assistant message as right-padded ids ``[B, A]`` + mask.

        The same tokens ``train=True`` labels, to score a reference answer after the prompt
        that ``train=False`` builds from ``conversation[:-1]``.
        """
        rows = [self._answer_ids(messages) for messages in conversations]
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = torch.tensor(row)
            mask[i, : len(row)] = 1
        return ids, mask

    def decode(self, ids: torch.Tensor) -> list[str]:
        return [t.strip() for t in self.tokenizer.batch_decode(ids, skip_special_tokens=True)]

    # -- save / load ---------------------------------------------------------------------------
    def save_pretrained(self, folder: str | Path) -> None:
        folder = Path(folder)
        self.tokenizer.save_pretrained(folder)
        (folder / "chat_template.jinja").write_text(self.chat_template)
        config = {
            "processor_class": "MMLLMProcessor",
            "image_size": self.image_size,
            "mean": self.mean,
            "std": self.std,
            "image_seq_len": self.image_seq_len,
            "image_token": self.image_token,
        }
        (folder / PROCESSOR_FILE).write_text(json.dumps(config, indent=2))

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> MMLLMProcessor:
        folder = Path(folder)
        if not (folder / PROCESSOR_FILE).is_file():
            raise MMLLMError(
                f"{folder}: no {PROCESSOR_FILE}; save one with processor.save_pretrained"
            )
        config = json.loads((folder / PROCESSOR_FILE).read_text())
        config.pop("processor_class", None)
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        template = (folder / "chat_template.jinja").read_text()
        return cls(tokenizer, chat_template=template, **config)
