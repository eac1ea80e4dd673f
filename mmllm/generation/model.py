"""An LLM that writes image tokens: text prompt -> discrete ids -> image.

The LLM (any HF causal LM, default SmolLM2-135M-Instruct) gets ``K + 1`` new vocabulary rows: one
per code of a discrete image tokenizer and ``<boi>`` (begin of image). After the prompt and
``<boi>`` it predicts the tokenizer's ``N`` ids one by one (raster order for a 2D grid); the
output layer for those positions is tied to the same rows (as SmolLM2 ties its own vocabulary),
so training and sampling score only the ``K`` image codes instead of the full 49k text
vocabulary. :meth:`ImageGenerator.to_hf` folds the rows into the LLM's own embedding matrix
(``resize_token_embeddings`` + ``<img_i>`` tokens) for tools that want a plain checkpoint.

New rows start from the codebook, not at random: ``mean text embedding + P @ code``, with ``P`` a
fixed random projection scaled to the text embeddings' spread, so codes that are close in the
tokenizer's latent space start close in the LLM (Liu et al. "LaVIT" / Chameleon initialise new
image rows similarly; the projection is the deviation: no trained adapter exists for generation).

Sampling: temperature, top-k and classifier-free guidance (Ho & Salimans, arXiv:2207.12598; as
used for LLM image generation by LlamaGen, arXiv:2406.06525): training replaces the prompt by an
empty one with probability ``cfg_dropout``; at sampling ``logits = u + s * (c - u)``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from mmllm.errors import MMLLMError
from mmllm.vision_tokenizers.discrete import DiscreteTokenizer

CONFIG_FILE, ROWS_FILE, TOKENIZER_DIR, LORA_DIR = (
    "generator_config.json",
    "image_rows.safetensors",
    "image_tokenizer",
    "lora",
)


@dataclass
class GeneratorConfig:
    """What a generator is made of; saved as ``generator_config.json``."""

    llm: str = "smollm2"
    template: str = "<|im_start|>user\nDraw: {prompt}<|im_end|>\n<|im_start|>assistant\n"
    cfg_dropout: float = 0.1
    init_seed: int = 0


class ImageGenerator(nn.Module):
    """LLM + image vocabulary rows + the discrete tokenizer that decodes what it writes."""

    def __init__(
        self,
        config: GeneratorConfig,
        image_tokenizer: DiscreteTokenizer,
        llm: nn.Module | None = None,
        text_tokenizer=None,
    ):
        super().__init__()
        if llm is None or text_tokenizer is None:
            from mmllm.llm import load_llm

            llm, text_tokenizer = load_llm(config.llm)
        if "{prompt}" not in config.template:
            raise MMLLMError("generator template must contain '{prompt}'")
        self.config, self.llm, self.text_tokenizer = config, llm, text_tokenizer
        self.image_tokenizer = image_tokenizer.eval().requires_grad_(False)
        self.num_codes = image_tokenizer.quantizer.codebook_size
        self.num_image_tokens = image_tokenizer.num_tokens
        self.image_rows = nn.Parameter(self._initial_rows())

    # -- vocabulary --
    @property
    def boi(self) -> int:
        """Row index of ``<boi>`` in :attr:`image_rows` (codes are rows ``0..K-1``)."""
        return self.num_codes

    def _initial_rows(self) -> Tensor:
        from mmllm.adapters import codebook_rows

        text = self.llm.get_input_embeddings().weight.detach()
        codes = self.image_tokenizer.quantizer.ids_to_codes(torch.arange(self.num_codes))
        rows = codebook_rows(codes, text, self.config.init_seed)
        gen = torch.Generator().manual_seed(self.config.init_seed + 1)
        boi = text.float().mean(0) + torch.randn(text.shape[1], generator=gen) * text.float().std(0)
        return torch.cat([rows, boi[None].to(rows.dtype)])

    def to_hf(self, out: str | Path | None = None):
        """The LLM with the image rows folded into its own vocabulary (LoRA merged).

        Adds ``<img_0> .. <img_{K-1}>, <boi>`` to the text tokenizer and copies the rows into the
        resized input embeddings (and the output layer, tied or not). Returns ``(llm, tokenizer)``
        and saves both to ``out`` when given.
        """
        import copy

        llm = copy.deepcopy(self.llm)
        if hasattr(llm, "merge_and_unload"):
            llm = llm.merge_and_unload()
        tok = copy.deepcopy(self.text_tokenizer)
        names = [f"<img_{i}>" for i in range(self.num_codes)] + ["<boi>"]
        tok.add_tokens(names, special_tokens=True)
        first = tok.convert_tokens_to_ids(names[0])
        # never shrink: some LLMs keep padding rows beyond their tokenizer's length
        old_rows = llm.get_input_embeddings().num_embeddings
        llm.resize_token_embeddings(max(len(tok), old_rows), mean_resizing=False)
        rows = self.image_rows.detach()
        with torch.no_grad():
            llm.get_input_embeddings().weight[first : first + len(names)] = rows
            head = llm.get_output_embeddings()
            if head.weight.data_ptr() != llm.get_input_embeddings().weight.data_ptr():
                head.weight[first : first + len(names)] = rows
        if out is not None:
            llm.save_pretrained(out, safe_serialization=True)
            tok.save_pretrained(out)
        return llm, tok

    # -- inputs --
    def prompt_batch(self, prompts: list[str]) -> tuple[Tensor, Tensor]:
        """Left-padded prompt ids and mask (so image tokens line up at the end of every row)."""
        texts = [self.config.template.format(prompt=p.strip()) for p in prompts]
        encoded = [self.text_tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
        width = max(map(len, encoded))
        pad = self.text_tokenizer.pad_token_id or 0
        ids = torch.full((len(encoded), width), pad, dtype=torch.long)
        mask = torch.zeros((len(encoded), width), dtype=torch.long)
        for i, row in enumerate(encoded):
            ids[i, width - len(row) :] = torch.tensor(row)
            mask[i, width - len(row) :] = 1
        return ids, mask

    def _decoder(self) -> nn.Module:
        base = self.llm.get_base_model() if hasattr(self.llm, "get_base_model") else self.llm
        return base.get_decoder()

    def _run(self, embeds: Tensor, mask: Tensor, positions: Tensor, cache=None):
        out = self._decoder()(
            inputs_embeds=embeds,
            attention_mask=mask,
            position_ids=positions,
            past_key_values=cache,
            use_cache=cache is not None,
        )
        return out.last_hidden_state, out.past_key_values

    def _image_logits(self, hidden: Tensor) -> Tensor:
        return hidden @ self.image_rows[: self.num_codes].to(hidden.dtype).T

    def _prefix(self, input_ids: Tensor, attention_mask: Tensor) -> tuple[Tensor, Tensor]:
        text = self.llm.get_input_embeddings()(input_ids)
        boi = self.image_rows[self.boi].to(text.dtype).expand(len(text), 1, -1)
        mask = torch.cat([attention_mask, attention_mask.new_ones(len(text), 1)], 1)
        return torch.cat([text, boi], 1), mask

    # -- training --
    def forward(self, input_ids: Tensor, attention_mask: Tensor, image_ids: Tensor) -> dict:
        """Cross-entropy of the image ids after ``prompt <boi>`` (teacher forcing)."""
        if image_ids.shape[1] != self.num_image_tokens:
            raise MMLLMError(
                f"expected {self.num_image_tokens} image ids per row, got {image_ids.shape[1]}"
            )
        prefix, mask = self._prefix(input_ids, attention_mask)
        codes = self.image_rows[image_ids[:, :-1]].to(prefix.dtype)
        embeds = torch.cat([prefix, codes], 1)
        mask = torch.cat([mask, mask.new_ones(len(mask), codes.shape[1])], 1)
        positions = (mask.cumsum(1) - 1).clamp_min(0)
        hidden, _ = self._run(embeds, mask, positions)
        logits = self._image_logits(hidden[:, -self.num_image_tokens :]).float()
        loss = F.cross_entropy(logits.reshape(-1, self.num_codes), image_ids.reshape(-1))
        return {"loss": loss, "logits": logits}

    # -- sampling --
    @torch.no_grad()
    def generate_ids(
        self,
        prompts: list[str],
        temperature: float = 0.0,
        top_k: int | None = 50,
        cfg_scale: float = 1.0,
        seed: int | None = 0,
    ) -> Tensor:
        """Sample ``[B, N]`` image ids; ``temperature=0`` is greedy; ``cfg_scale=1`` is no CFG.

        Defaults are the best setting of ``benchmarks/generation.py`` for the shipped generator
        (greedy, no guidance: sampling at temperature 1 or CFG 3 drew worse images)."""
        check_sampling(prompts, temperature, top_k, cfg_scale, self.num_codes)
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        guided = cfg_scale != 1.0
        b = len(prompts)
        ids, mask = self.prompt_batch(list(prompts) + ([""] * b if guided else []))
        embeds, mask = self._prefix(ids, mask)
        positions = (mask.cumsum(1) - 1).clamp_min(0)
        from transformers import DynamicCache

        hidden, cache = self._run(embeds, mask, positions, DynamicCache())
        out = []
        for _ in range(self.num_image_tokens):
            logits = self._image_logits(hidden[:, -1]).float()
            if guided:
                cond, uncond = logits[:b], logits[b:]
                logits = uncond + cfg_scale * (cond - uncond)
            next_ids = sample_logits(logits, temperature, top_k, gen)
            out.append(next_ids)
            step = self.image_rows[next_ids.repeat(2 if guided else 1)].to(embeds.dtype)
            mask = torch.cat([mask, mask.new_ones(len(mask), 1)], 1)
            positions = positions[:, -1:] + 1
            hidden, cache = self._run(step[:, None], mask, positions, cache)
        return torch.stack(out, 1)

    @torch.no_grad()
    def generate(self, prompts: list[str] | str, **sampling) -> list[Image.Image]:
        """Prompts -> images (PIL), through :meth:`generate_ids` and the tokenizer's decoder."""
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        from mmllm.vision_tokenizers.images import from_pixels

        return from_pixels(self.image_tokenizer.decode(self.generate_ids(prompts, **sampling)))

    # -- save / load --
    def save_pretrained(self, folder: str | Path) -> None:
        """Writes ``generator_config.json``, ``image_rows.safetensors``, ``lora/`` and
        ``image_tokenizer/``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / CONFIG_FILE).write_text(json.dumps(asdict(self.config), indent=1))
        save_file({"image_rows": self.image_rows.detach().contiguous().cpu()}, folder / ROWS_FILE)
        self.image_tokenizer.save_pretrained(folder / TOKENIZER_DIR)
        if hasattr(self.llm, "peft_config"):
            self.llm.save_pretrained(
                folder / LORA_DIR, safe_serialization=True, save_embedding_layers=False
            )

    @classmethod
    def from_pretrained(cls, folder: str | Path | None = None) -> ImageGenerator:
        """Load a saved generator (default: the one shipped with mmllm)."""
        from mmllm.modeling import refuse_pickles

        if folder is None:
            from mmllm.default_model import default_generator_path

            folder = default_generator_path()
        folder = Path(folder)
        if not (folder / CONFIG_FILE).is_file() or not (folder / ROWS_FILE).is_file():
            raise MMLLMError(f"{folder}: not a generator folder ({CONFIG_FILE} + {ROWS_FILE})")
        refuse_pickles(folder)
        config = GeneratorConfig(**json.loads((folder / CONFIG_FILE).read_text()))
        image_tokenizer = DiscreteTokenizer.from_pretrained(folder / TOKENIZER_DIR)
        model = cls(config, image_tokenizer)
        rows = load_file(folder / ROWS_FILE)["image_rows"]
        if rows.shape != model.image_rows.shape:
            raise MMLLMError(
                f"{folder}: image rows {tuple(rows.shape)} do not fit this LLM/tokenizer "
                f"({tuple(model.image_rows.shape)})"
            )
        model.image_rows.data.copy_(rows)
        if (folder / LORA_DIR).is_dir():
            from peft import PeftModel

            model.llm = PeftModel.from_pretrained(model.llm, folder / LORA_DIR)
        return model.eval()


def check_sampling(
    prompts: list[str], temperature: float, top_k: int | None, cfg_scale: float, num_codes: int
) -> None:
    """Clear errors for sampling settings that cannot work."""
    if not prompts or not all(p.strip() for p in prompts):
        raise MMLLMError(
            "empty prompt: say what to draw, e.g. 'a red circle left of a blue square'"
        )
    if temperature < 0:
        raise MMLLMError(f"temperature must be >= 0, got {temperature}")
    if top_k is not None and top_k < 1:
        raise MMLLMError(f"top_k must be >= 1 (larger than the {num_codes} codes = no filter)")
    if cfg_scale < 1:
        raise MMLLMError(f"cfg_scale must be >= 1 (1 = no guidance), got {cfg_scale}")


def sample_logits(
    logits: Tensor, temperature: float, top_k: int | None, gen: torch.Generator | None
) -> Tensor:
    """One id per row: greedy at ``temperature == 0``, else top-k multinomial."""
    if temperature == 0:
        return logits.argmax(-1)
    logits = logits / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = logits.topk(top_k, -1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    return torch.multinomial(logits.softmax(-1), 1, generator=gen)[:, 0]
