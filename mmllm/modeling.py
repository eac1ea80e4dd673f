"""The multimodal model: vision encoder -> reducer -> adapter -> any causal LM (+ LoRA).

Composition only: the encoder and the LLM are used as their libraries define them. Images enter
the LLM by one masked assignment at the image-placeholder positions. A checkpoint folder holds
``config.json``, ``adapter.safetensors`` (the trained adapter), ``lora/`` (peft LoRA, if any),
``encoder.safetensors`` (only if the encoder was fine-tuned) and the processor files; the base
LLM and encoder are referenced by name (``smollm2``, ``efficientnet_lite0``, or a local folder),
not copied, so a fine-tuned checkpoint stays small.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutputWithPast

from mmllm.adapters import build_adapter
from mmllm.errors import MMLLMError
from mmllm.layout import ATTENTION, key_bias, size_bias, source_positions, use_biased_attention
from mmllm.reduction import TextContext, VisualTokens, build

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
ADAPTER_FILE = "adapter.safetensors"
ENCODER_FILE = "encoder.safetensors"
IMAGE_TOKEN = "<|image|>"


def widen_input(
    saved: dict[str, torch.Tensor], fresh: dict[str, torch.Tensor], vision_dim: int
) -> dict[str, torch.Tensor]:
    """Adapter weights for a wider input: saved values in the leading slice of each grown tensor.

    A tensor whose last dim grew to ``vision_dim`` keeps the saved values in its first columns; the
    new columns of a matrix are zero, so new input channels start silent, while vectors (a
    LayerNorm's scale and shift) keep their fresh initialisation there. Note that a norm over the
    whole input sees the new channels, so outputs match the saved model only approximately.
    """
    out = {}
    missing = sorted(set(fresh) - set(saved))
    if missing:
        raise MMLLMError(f"the saved adapter lacks {', '.join(missing)}: not the same adapter")
    for name, new in fresh.items():
        old = saved[name]
        if old.shape == new.shape:
            out[name] = old
            continue
        if old.shape[:-1] != new.shape[:-1] or new.shape[-1] != vision_dim:
            raise MMLLMError(
                f"adapter tensor {name}: cannot grow {tuple(old.shape)} to {tuple(new.shape)}"
            )
        grown = torch.zeros_like(new) if new.dim() > 1 else new.detach().clone()
        grown[..., : old.shape[-1]] = old
        out[name] = grown
    return out


class MMLLMConfig(PretrainedConfig):
    """Names the parts; the weights of the base parts live in their packages or folders."""

    model_type = "mmllm"

    def __init__(
        self,
        encoder: str = "efficientnet_lite0",
        image_size: int = 448,
        llm: str = "smollm2",
        reduction: str = "identity",
        adapter: str = "mlp2x_gelu",
        adapter_kwargs: dict | None = None,
        image_token: str = IMAGE_TOKEN,
        vision_dim: int | None = None,
        llm_dim: int | None = None,
        encoder_finetuned: bool = False,
        visual_positions: str = "source",
        proportional_attention: bool = True,
        **kwargs: Any,
    ):
        """``visual_positions``: ``source`` gives each reduced visual token the rotary position
        of its source grid cell (``compact``: packed one after another);
        ``proportional_attention``: merged tokens get ``log size`` on their attention logits
        (ToMe). Both change nothing at full tokens; see :mod:`mmllm.layout`."""
        if visual_positions not in ("source", "compact"):
            raise MMLLMError(
                f"visual_positions must be 'source' or 'compact', got {visual_positions!r}"
            )
        self.encoder = encoder
        self.image_size = image_size
        self.llm = llm
        self.reduction = reduction
        self.adapter = adapter
        self.adapter_kwargs = dict(adapter_kwargs or {})
        self.image_token = image_token
        self.vision_dim = vision_dim
        self.llm_dim = llm_dim
        self.encoder_finetuned = encoder_finetuned  # its weights are then in the checkpoint
        self.visual_positions = visual_positions
        self.proportional_attention = proportional_attention
        super().__init__(**kwargs)


def refuse_pickles(folder: Path) -> None:
    """Weights load from safetensors only: a folder holding pickles is refused, not read."""
    pickled = [p.name for p in folder.rglob("*") if p.suffix in PICKLE_SUFFIXES]
    if pickled:
        raise MMLLMError(
            f"{folder} holds pickled weights ({', '.join(sorted(pickled)[:3])}); mmllm loads "
            "safetensors only. Convert them (load with torch.load(weights_only=True), save with "
            "safetensors) and remove the pickles"
        )


@dataclass
class Prompt:
    """LLM inputs built from ids and images: embeddings, and where the layout of reduced visual
    tokens needs them, position ids and a per-key attention bias (``None``: the defaults)."""

    embeds: torch.Tensor
    position_ids: torch.Tensor | None = None
    key_bias: torch.Tensor | None = None


class MMLLMForConditionalGeneration(PreTrainedModel):
    """Image + text -> text. ``forward`` returns loss and logits; ``generate`` decodes text."""

    config_class = MMLLMConfig
    base_model_prefix = "mmllm"
    supports_gradient_checkpointing = False
    lora_merged = False  # set by from_pretrained(merge_lora=True): the LoRA is in the weights

    def __init__(
        self, config: MMLLMConfig, encoder: nn.Module | None = None, llm=None, tokenizer=None
    ):
        super().__init__(config)
        if encoder is None:
            from mmllm.encoders import build_encoder

            encoder = build_encoder(config.encoder, config.image_size)
        if llm is None:
            from mmllm.llm import load_llm

            llm, tokenizer = load_llm(config.llm)
        config.vision_dim = encoder.hidden_size
        config.llm_dim = llm.get_input_embeddings().embedding_dim
        self.adapter = build_adapter(
            config.adapter, config.vision_dim, config.llm_dim, **config.adapter_kwargs
        )
        self.post_init()  # initialises the adapter only: the parts below are pretrained
        self.encoder = encoder.requires_grad_(False).eval()
        self.llm = llm
        if config.proportional_attention:
            use_biased_attention(self.llm)
            if self._causal_lm().config._attn_implementation != ATTENTION:
                raise MMLLMError(
                    f"the LLM '{config.llm}' does not take a custom attention function, so "
                    "proportional attention cannot run; set proportional_attention=False"
                )
        self.adapter.bind(self.encoder, self.llm)
        self.tokenizer = tokenizer
        self.reducer = build(config.reduction)
        if tokenizer is not None:
            self._add_image_token(tokenizer)

    # -- setup ---------------------------------------------------------------------------------
    def _add_image_token(self, tokenizer) -> None:
        if self.config.image_token not in tokenizer.get_vocab():
            tokenizer.add_special_tokens({"additional_special_tokens": [self.config.image_token]})
        self.image_token_id = tokenizer.convert_tokens_to_ids(self.config.image_token)
        old_rows = self.llm.get_input_embeddings().num_embeddings
        if self.image_token_id >= old_rows:
            # The new input row is never read (image positions are overwritten by visual
            # features); zero rows keep the image token's output logit fixed at 0, so every
            # load gives the same model and checkpoints need not store the embeddings.
            self.llm.resize_token_embeddings(len(tokenizer), mean_resizing=False)
            with torch.no_grad():
                self.llm.get_input_embeddings().weight[old_rows:] = 0
                out = self.llm.get_output_embeddings()
                if out is not None:
                    out.weight[old_rows:] = 0

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    def train(self, mode: bool = True):
        """Train mode for the adapter and LLM; the frozen encoder stays in eval mode (its
        BatchNorm statistics and dropout must match inference)."""
        super().train(mode)
        self.encoder.eval()
        return self

    @property
    def encoder_trains(self) -> bool:
        """Whether gradients reach the encoder (fine-tuning); a frozen one runs under no_grad."""
        return any(p.requires_grad for p in self.encoder.parameters())

    def unfreeze_encoder(self) -> None:
        """Fine-tune the encoder's weights (those it names as trainable); BatchNorm statistics and
        dropout stay as at inference (:meth:`train` keeps the encoder in eval mode)."""
        names = set(self.encoder.trainable_state_names())
        if not names:
            raise MMLLMError(
                f"encoder '{self.config.encoder}' has no weights its tokens depend on through "
                "gradients (e.g. a discrete tokenizer's ids): it cannot be fine-tuned; drop "
                "train.encoder_lr"
            )
        for name, p in self.encoder.named_parameters():
            p.requires_grad_(name in names)
        self.config.encoder_finetuned = True

    def encoder_state(self) -> dict[str, torch.Tensor]:
        """The fine-tuned encoder weights a checkpoint stores."""
        params = dict(self.encoder.named_parameters())
        return {
            k: params[k].detach().contiguous().cpu() for k in self.encoder.trainable_state_names()
        }

    def load_encoder_state(self, state: dict[str, torch.Tensor]) -> None:
        """Load fine-tuned encoder weights; names the encoder does not have are refused."""
        params = dict(self.encoder.named_parameters())
        unknown = sorted(set(state) - set(params))
        if unknown:
            raise MMLLMError(
                f"{ENCODER_FILE} holds weights the encoder '{self.config.encoder}' does not have "
                f"({', '.join(unknown[:3])}): it was saved from another encoder"
            )
        with torch.no_grad():
            for k, v in state.items():
                if params[k].shape != v.shape:
                    raise MMLLMError(
                        f"{ENCODER_FILE}: {k} has shape {tuple(v.shape)}, the encoder expects "
                        f"{tuple(params[k].shape)}"
                    )
                params[k].copy_(v)

    def set_reduction(self, spec: str) -> None:
        """Change the reducer (e.g. for evaluation at another budget)."""
        self.reducer = build(spec)
        self.config.reduction = spec

    def reducer_for(self, spec: str | None = None):
        """The reducer of ``spec`` (built once, then cached); ``None``: the configured one.

        Lets training draw a budget per batch (``train.reduction_budgets``) without changing
        the model's configured reduction.
        """
        if spec is None or spec == self.config.reduction:
            return self.reducer
        cache = self.__dict__.setdefault("_reducer_cache", {})
        if spec not in cache:
            cache[spec] = build(spec)
        return cache[spec]

    def num_image_tokens(
        self, adapter_side: int | None = None, reduction: str | None = None
    ) -> int:
        """Placeholder tokens per image: known before any pixel is encoded."""
        n = self.reducer_for(reduction).output_len(self.encoder.num_tokens, self.encoder.grid)
        spec = self.config.reduction if reduction is None else reduction
        grid = self.encoder.grid if spec == "identity" else None
        if adapter_side is not None:
            return min(adapter_side, self.encoder.grid[0]) * min(adapter_side, self.encoder.grid[1])
        return self.adapter.output_len(n, grid)

    # -- forward -------------------------------------------------------------------------------
    def _causal_lm(self):
        return self.llm.get_base_model() if hasattr(self.llm, "get_base_model") else self.llm

    def encode_images(
        self,
        pixel_values: torch.Tensor,
        text: TextContext | None = None,
        adapter_side: int | None = None,
        reduction: str | None = None,
    ) -> torch.Tensor:
        """Pixels ``[I, 3, H, W]`` -> LLM-space visual embeddings ``[I, M, D]``.

        ``reduction`` overrides the configured reducer for this call only.
        """
        return self._encode(pixel_values, text, adapter_side, reduction)[0]

    def _encode(
        self,
        pixel_values: torch.Tensor,
        text: TextContext | None,
        adapter_side: int | None,
        reduction: str | None,
    ) -> tuple[torch.Tensor, VisualTokens]:
        """Adapted embeddings and the reduced tokens they came from (for index and size)."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.encoder_trains):
            tokens = self.encoder(pixel_values)
        tokens = self.reducer_for(reduction)(tokens, text)
        if adapter_side is not None:
            return self.adapter(tokens, side=adapter_side), tokens
        return self.adapter(tokens), tokens

    def text_context(
        self,
        embeds: torch.Tensor,
        image_mask: torch.Tensor,
        attention_mask: torch.Tensor | None,
        reduction: str | None = None,
        hidden: torch.Tensor | None = None,
    ) -> TextContext:
        """Each image's instruction: the text embeddings of the sequence it sits in (image and
        padding positions masked out), with the adapter as the visual->text projection.

        ``hidden`` marks further positions the reducer must not read: in training, the answer
        tokens, so a text-reading reducer selects from the question alone, as at inference.
        """
        per_image = self.num_image_tokens(reduction=reduction)
        rows = torch.arange(len(embeds), device=embeds.device).repeat_interleave(
            image_mask.sum(1) // per_image
        )
        text_mask = ~image_mask if attention_mask is None else (~image_mask & attention_mask.bool())
        if hidden is not None:
            text_mask = text_mask & ~hidden
        return TextContext(
            embeds=embeds[rows],
            mask=text_mask[rows],
            projected=True,
            project=self.adapter.token_projector(),
        )

    def prompt(
        self,
        input_ids: torch.Tensor,
        pixel_values: torch.Tensor | None,
        adapter_side: int | None = None,
        attention_mask: torch.Tensor | None = None,
        reduction: str | None = None,
        labels: torch.Tensor | None = None,
    ) -> Prompt:
        """Embeddings plus, for reduced images, source positions and the size bias.

        ``labels`` (training): their answer positions are hidden from text-reading reducers.
        """
        embeds = self.llm.get_input_embeddings()(input_ids)
        mask = input_ids == self.image_token_id
        n_slots = int(mask.sum())
        if pixel_values is None or len(pixel_values) == 0:
            if n_slots:
                raise MMLLMError(f"the text has {n_slots} image placeholder tokens but no images")
            return Prompt(embeds)
        uses_text = self.reducer_for(reduction).uses_text
        text = None
        if uses_text:
            answers = None if labels is None else labels != -100
            text = self.text_context(embeds, mask, attention_mask, reduction, hidden=answers)
        visual, tokens = self._encode(pixel_values, text, adapter_side, reduction)
        if visual.numel() // visual.shape[-1] != n_slots:
            raise MMLLMError(
                f"{len(pixel_values)} image(s) give {visual.shape[0] * visual.shape[1]} visual "
                "tokens "
                f"but the text has {n_slots} placeholders; build inputs with the model's processor"
            )
        embeds = embeds.masked_scatter(mask.unsqueeze(-1), visual.to(embeds.dtype))
        n_source = tokens.grid[0] * tokens.grid[1]
        if visual.shape[1] != tokens.num_tokens or tokens.num_tokens == n_source:
            return Prompt(embeds)  # full tokens, or an adapter that regroups them
        positions = bias = None
        if self.config.visual_positions == "source":
            if attention_mask is None:
                attention_mask = torch.ones_like(input_ids)
            positions = source_positions(attention_mask, mask, tokens.index, n_source)
        if self.config.proportional_attention and bool((tokens.size > 1).any()):
            bias = size_bias(mask, tokens.size)
        return Prompt(embeds, positions, bias)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        adapter_side: int | None = None,
        reduction: str | None = None,
        **kwargs: Any,
    ) -> CausalLMOutputWithPast:
        """Training / scoring pass; ``reduction`` (a before-LLM spec) overrides the configured
        reducer for this batch, as ``train.reduction_budgets`` does."""
        prompt = self.prompt(
            input_ids, pixel_values, adapter_side, attention_mask, reduction, labels=labels
        )
        lm = self._causal_lm()
        with key_bias(prompt.key_bias):
            hidden = lm.get_decoder()(
                inputs_embeds=prompt.embeds,
                attention_mask=attention_mask,
                position_ids=prompt.position_ids,
            ).last_hidden_state
        head = lm.get_output_embeddings()
        if labels is None:
            return CausalLMOutputWithPast(logits=head(hidden))
        # logits only where a label follows: the answer tokens (saves the vocab projection
        # on every prompt and image position)
        targets = labels[:, 1:]
        keep = targets != -100
        logits = head(hidden[:, :-1][keep])
        loss = nn.functional.cross_entropy(logits.float(), targets[keep])
        return CausalLMOutputWithPast(loss=loss, logits=logits)

    def _in_llm(self):
        from mmllm.reduction.in_llm import split_in_llm

        return split_in_llm(self.reducer)[1]

    @torch.no_grad()
    def prefill_logits(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        pixel_values: torch.Tensor | None,
    ) -> torch.Tensor:
        """Last-position logits of the prompt (what prefill costs), in-LLM drops included."""
        prompt = self.prompt(input_ids, pixel_values, attention_mask=attention_mask)
        inside = self._in_llm()
        if inside is not None:
            from mmllm.reduction.in_llm import DropRunner

            visual = input_ids == self.image_token_id
            runner = DropRunner(self._causal_lm(), inside.schedule(int(visual[0].sum())))
            return runner.prefill(prompt.embeds, attention_mask, visual)
        lm = self._causal_lm()
        with key_bias(prompt.key_bias):
            hidden = lm.get_decoder()(
                inputs_embeds=prompt.embeds,
                attention_mask=attention_mask,
                position_ids=prompt.position_ids,
            )
        return lm.get_output_embeddings()(hidden.last_hidden_state[:, -1])

    @torch.no_grad()
    def answer_nll(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        pixel_values: torch.Tensor | None,
        answer_ids: torch.Tensor,
        answer_mask: torch.Tensor,
    ) -> torch.Tensor:
        """Mean negative log-likelihood per answer token of each row ``[B]``, teacher forced.

        ``input_ids`` is the left-padded generation prompt (what ``generate`` gets) and
        ``answer_ids`` the right-padded reference answers (``processor.answer_ids``). Positions
        and in-LLM drops are exactly those of greedy decoding, so the score measures what a
        reduction costs the model on the reference answer even where exact match is noisy.
        """
        prompt = self.prompt(input_ids, pixel_values, attention_mask=attention_mask)
        embeds = prompt.embeds
        lm = self._causal_lm()
        answer_embeds = self.llm.get_input_embeddings()(answer_ids)
        inside = self._in_llm()
        if inside is not None:
            from mmllm.reduction.in_llm import DropRunner

            visual = input_ids == self.image_token_id
            runner = DropRunner(lm, inside.schedule(int(visual[0].sum())))
            steps = [runner.prefill(embeds, attention_mask, visual)]
            for n in range(answer_ids.shape[1] - 1):
                steps.append(runner.step(answer_embeds[:, n : n + 1], n))
            logits = torch.stack(steps, dim=1)
        else:
            mask = torch.cat([attention_mask, answer_mask], dim=1)
            if prompt.position_ids is None:
                positions = (mask.cumsum(-1) - 1).clamp_min(0)
            else:  # the answer follows the prompt's last (never padded) position
                steps = torch.arange(1, answer_ids.shape[1] + 1, device=answer_ids.device)
                positions = torch.cat([prompt.position_ids, prompt.position_ids[:, -1:] + steps], 1)
            with key_bias(prompt.key_bias):
                hidden = lm.get_decoder()(
                    inputs_embeds=torch.cat([embeds, answer_embeds.to(embeds.dtype)], dim=1),
                    attention_mask=mask,
                    position_ids=positions,
                ).last_hidden_state
            start = input_ids.shape[1] - 1
            logits = lm.get_output_embeddings()(hidden[:, start : start + answer_ids.shape[1]])
        nll = nn.functional.cross_entropy(
            logits.float().transpose(1, 2), answer_ids, reduction="none"
        )
        keep = answer_mask.to(nll.dtype)
        return (nll * keep).sum(1) / keep.sum(1).clamp_min(1)

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        **generate_kwargs: Any,
    ) -> torch.Tensor:
        """New token ids only (the prompt is given as embeddings)."""
        prompt = self.prompt(input_ids, pixel_values, attention_mask=attention_mask)
        embeds = prompt.embeds
        inside = self._in_llm()
        if inside is not None:
            from mmllm.reduction.in_llm import generate_with_drops

            if generate_kwargs.get("do_sample"):
                raise MMLLMError("in-LLM reduction decodes greedily; drop do_sample")
            visual = input_ids == self.image_token_id
            mask = attention_mask if attention_mask is not None else torch.ones_like(input_ids)
            return generate_with_drops(
                self._causal_lm(),
                self.llm.get_input_embeddings(),
                embeds,
                mask,
                visual,
                inside.schedule(int(visual[0].sum())),
                generate_kwargs.get("max_new_tokens", 20),
                self.tokenizer.eos_token_id,
            )
        pad = self.tokenizer.pad_token_id
        generate_kwargs.setdefault(
            "pad_token_id", pad if pad is not None else self.tokenizer.eos_token_id
        )
        if prompt.position_ids is not None:
            generate_kwargs["position_ids"] = prompt.position_ids
        with key_bias(prompt.key_bias):
            return self.llm.generate(
                inputs_embeds=embeds, attention_mask=attention_mask, **generate_kwargs
            )

    # -- save / load ---------------------------------------------------------------------------
    def save_pretrained(self, save_directory: str | Path, **kwargs: Any) -> None:
        if self.lora_merged:
            raise MMLLMError(
                "this model was loaded with its LoRA merged for inference, so saving it would "
                "drop the fine-tuning; load it with merge_lora=False to save, or use `mmllm merge`"
            )
        folder = Path(save_directory)
        folder.mkdir(parents=True, exist_ok=True)
        self.config.save_pretrained(folder)
        state = {k: v.detach().contiguous().cpu() for k, v in self.adapter.state_dict().items()}
        save_file(state, folder / ADAPTER_FILE)
        if self.config.encoder_finetuned:
            save_file(self.encoder_state(), folder / ENCODER_FILE)
        if hasattr(self.llm, "peft_config"):
            self.llm.save_pretrained(
                folder / "lora", safe_serialization=True, save_embedding_layers=False
            )
        if self.tokenizer is not None:
            from mmllm.processor import MMLLMProcessor

            MMLLMProcessor.from_model(self).save_pretrained(folder)

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        *,
        encoder=None,
        llm=None,
        tokenizer=None,
        wider_encoder: str | None = None,
        merge_lora: bool = False,
        **kwargs: Any,
    ):
        """Load a checkpoint folder (safetensors only), rebuilding the referenced base parts.

        ``merge_lora`` folds the LoRA weights into the LLM (peft ``merge_and_unload``) for
        inference: the same function without the adapter's extra matmuls in every projection.
        Such a model cannot be saved again (its LoRA is gone); training loads without it.

        ``wider_encoder`` (e.g. ``efficientnet_lite0:detail=4,7`` for a checkpoint trained on
        ``efficientnet_lite0``) swaps in an encoder whose tokens start with the saved encoder's
        channels and append new ones; the adapter's input grows with zero weights on the new
        channels (see :func:`widen_input`), so fine-tuning continues from the saved model.
        """
        folder = Path(path)
        if not (folder / "config.json").is_file():
            raise MMLLMError(f"{folder}: not an mmllm checkpoint (no config.json)")
        refuse_pickles(folder)
        config = MMLLMConfig.from_pretrained(folder)
        for key, value in kwargs.items():
            setattr(config, key, value)
        if wider_encoder is not None and wider_encoder != config.encoder:
            if ":" in config.encoder or wider_encoder.partition(":")[0] != config.encoder:
                raise MMLLMError(
                    f"{folder} was trained on encoder '{config.encoder}'; only the same encoder "
                    f"with added detail blocks can continue it, not '{wider_encoder}'"
                )
            config.encoder = wider_encoder
        else:
            wider_encoder = None
        if config.llm != "smollm2" and (folder / config.llm).is_dir():
            config.llm = str(folder / config.llm)  # a merged checkpoint's own LLM folder
        model = cls(config, encoder=encoder, llm=llm, tokenizer=tokenizer)
        if not (folder / ADAPTER_FILE).is_file():
            raise MMLLMError(f"{folder}: {ADAPTER_FILE} is missing")
        state = load_file(folder / ADAPTER_FILE)
        if wider_encoder is not None:
            state = widen_input(state, model.adapter.state_dict(), config.vision_dim)
        model.adapter.load_state_dict(state, strict=True)
        if config.encoder_finetuned:
            if not (folder / ENCODER_FILE).is_file():
                raise MMLLMError(
                    f"{folder}: the config says the encoder was fine-tuned but {ENCODER_FILE} "
                    "is missing"
                )
            model.load_encoder_state(load_file(folder / ENCODER_FILE))
        if (folder / "lora").is_dir():
            from peft import PeftModel

            model.llm = PeftModel.from_pretrained(model.llm, folder / "lora")
            if merge_lora:
                model.llm = model.llm.merge_and_unload()
                model.lora_merged = True
        model.eval()
        return model
