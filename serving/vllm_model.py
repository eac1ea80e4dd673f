"""The mmllm architecture as a vLLM model: vision encoder -> reducer -> adapter, vLLM's own LLM.

Imported by vLLM through the plugin (:mod:`mmllm.serving.plugin`), never at ``import mmllm``.
The processor expands each image placeholder to ``ServedSpec.image_seq_len`` tokens, the count
the reducer's ``output_len`` promises, so vLLM schedules and allocates KV cache for the *reduced*
sequence before the encoder runs. The decoder is vLLM's Llama implementation (paged attention,
continuous batching); the vision path runs in ``embed_multimodal``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from functools import cached_property
from typing import ClassVar

import torch
from torch import nn
from transformers import BatchFeature
from vllm.config import VllmConfig
from vllm.config.multimodal import MultiModalDummyOptions
from vllm.inputs import MultiModalDataDict
from vllm.model_executor.models.interfaces import (
    MultiModalEmbeddings,
    SupportsLoRA,
    SupportsMultiModal,
)
from vllm.model_executor.models.module_mapping import MultiModelKeys
from vllm.model_executor.models.utils import (
    WeightsMapper,
    init_vllm_registered_model,
    maybe_prefix,
)
from vllm.multimodal import MULTIMODAL_REGISTRY
from vllm.multimodal.inputs import MultiModalFieldConfig, MultiModalKwargsItems
from vllm.multimodal.parse import MultiModalDataItems
from vllm.multimodal.processing import (
    BaseDummyInputsBuilder,
    BaseMultiModalProcessor,
    BaseProcessingInfo,
    PromptReplacement,
    PromptUpdate,
)
from vllm.sequence import IntermediateTensors

from mmllm.serving.spec import ServedSpec
from mmllm.vision_tokenizers.images import to_pixels

#: Images per prompt the server accepts unless ``--limit-mm-per-prompt`` lowers it.
MAX_IMAGES_PER_PROMPT = 4


class MMLLMProcessingInfo(BaseProcessingInfo):
    """Placeholder counts and limits, read from the exported ``mmllm`` config block."""

    @cached_property
    def spec(self) -> ServedSpec:
        return ServedSpec.from_config(self.get_hf_config())

    def get_supported_mm_limits(self) -> Mapping[str, int | None]:
        return {"image": MAX_IMAGES_PER_PROMPT}

    def get_supported_mm_processor_kwargs(self) -> dict[str, set[str]]:
        return {"text_kwargs": set(), "images_kwargs": set()}

    @cached_property
    def image_seq_len(self) -> int:
        return self.spec.image_seq_len(self.get_hf_config().hidden_size)

    def get_mm_max_tokens_per_item(
        self, seq_len: int, mm_counts: Mapping[str, int]
    ) -> Mapping[str, int]:
        return {"image": self.image_seq_len}


class MMLLMDummyInputsBuilder(BaseDummyInputsBuilder[MMLLMProcessingInfo]):
    """Profiling inputs: one placeholder and one model-sized image per image slot."""

    def get_dummy_text(self, mm_counts: Mapping[str, int]) -> str:
        return self.info.spec.image_token * mm_counts.get("image", 0)

    def get_dummy_mm_data(
        self,
        seq_len: int,
        mm_counts: Mapping[str, int],
        mm_options: MultiModalDummyOptions,
    ) -> MultiModalDataDict:
        size = self.info.spec.image_size
        return {
            "image": self._get_dummy_images(
                width=size,
                height=size,
                num_images=mm_counts.get("image", 0),
                overrides=mm_options.get("image") if mm_options else None,
            )
        }


class MMLLMMultiModalProcessor(BaseMultiModalProcessor[MMLLMProcessingInfo]):
    """Images -> ``pixel_values`` with mmllm's own preprocessing (the same as local chat)."""

    def _call_hf_processor(
        self, hf_data: Mapping[str, object], hf_kwargs: Mapping[str, object]
    ) -> BatchFeature:
        spec = self.info.spec
        images = hf_data.get("images") or []
        if not images:
            return BatchFeature()
        pixels = to_pixels(list(images), spec.image_size, spec.mean, spec.std)
        return BatchFeature({"pixel_values": pixels}, tensor_type="pt")

    def _get_mm_fields_config(
        self, hf_inputs: BatchFeature, hf_processor_mm_kwargs: Mapping[str, object]
    ) -> Mapping[str, MultiModalFieldConfig]:
        return {"pixel_values": MultiModalFieldConfig.batched("image")}

    def _get_prompt_updates(
        self,
        mm_items: MultiModalDataItems,
        hf_processor_mm_kwargs: Mapping[str, object],
        out_mm_kwargs: MultiModalKwargsItems,
    ) -> Sequence[PromptUpdate]:
        token_id = self.info.spec.image_token_id
        return [
            PromptReplacement(
                modality="image",
                target=[token_id],
                replacement=[token_id] * self.info.image_seq_len,
            )
        ]


@MULTIMODAL_REGISTRY.register_processor(
    MMLLMMultiModalProcessor,
    info=MMLLMProcessingInfo,
    dummy_inputs=MMLLMDummyInputsBuilder,
)
class MMLLMForVLLM(nn.Module, SupportsMultiModal, SupportsLoRA):
    """vLLM model for an ``mmllm export`` folder."""

    packed_modules_mapping: ClassVar[dict[str, list[str]]] = {
        "qkv_proj": ["q_proj", "k_proj", "v_proj"],
        "gate_up_proj": ["gate_proj", "up_proj"],
    }

    # names in a peft LoRA of the HF LLM -> this model's modules (vLLM's LoRA loader reads it)
    hf_to_vllm_mapper = WeightsMapper(
        orig_to_new_prefix={
            "model.": "language_model.model.",
            "lm_head.": "language_model.lm_head.",
        }
    )

    @classmethod
    def get_placeholder_str(cls, modality: str, i: int) -> str | None:
        if modality.startswith("image"):
            from mmllm.modeling import IMAGE_TOKEN

            return IMAGE_TOKEN
        raise ValueError(f"mmllm serves images only, not {modality!r}")

    def __init__(self, *, vllm_config: VllmConfig, prefix: str = ""):
        super().__init__()
        from mmllm.adapters import build_adapter
        from mmllm.encoders import build_encoder
        from mmllm.reduction import build

        config = vllm_config.model_config.hf_config
        self.config = config  # vLLM's LoRA manager reads it
        self.spec = ServedSpec.from_config(config)
        with self._mark_tower_model(vllm_config, "image"):
            # the encoder loads its pretrained weights from its package; the adapter's come
            # from the exported safetensors through load_weights
            self.encoder = build_encoder(self.spec.encoder, self.spec.image_size).float().eval()
            self.adapter = build_adapter(
                self.spec.adapter,
                self.spec.vision_dim,
                config.hidden_size,
                **self.spec.adapter_kwargs,
            )
        self.reducer = build(self.spec.reduction)
        with self._mark_language_model(vllm_config):
            self.language_model = init_vllm_registered_model(
                vllm_config=vllm_config,
                hf_config=config,
                prefix=maybe_prefix(prefix, "language_model"),
                architectures=[self.spec.llm_architecture],
            )
        self.make_empty_intermediate_tensors = self.language_model.make_empty_intermediate_tensors

    def embed_multimodal(self, **kwargs: object) -> MultiModalEmbeddings:
        pixel_values = kwargs.pop("pixel_values", None)
        if pixel_values is None:
            return []
        if isinstance(pixel_values, (list, tuple)):
            pixel_values = torch.stack(list(pixel_values))
        param = next(self.adapter.parameters())
        with torch.no_grad():
            tokens = self.encoder(pixel_values.to(torch.float32))
            tokens = self.reducer(tokens)
            tokens = replace(tokens, embeds=tokens.embeds.to(param.dtype))
            visual = self.adapter(tokens)
        return list(visual.unbind(0))

    def forward(
        self,
        input_ids: torch.Tensor | None,
        positions: torch.Tensor,
        intermediate_tensors: IntermediateTensors | None = None,
        inputs_embeds: torch.Tensor | None = None,
        **kwargs: object,
    ) -> torch.Tensor | IntermediateTensors:
        if intermediate_tensors is not None:
            inputs_embeds = None
        return self.language_model.model(
            input_ids, positions, intermediate_tensors, inputs_embeds=inputs_embeds
        )

    def compute_logits(self, hidden_states: torch.Tensor) -> torch.Tensor | None:
        return self.language_model.compute_logits(hidden_states)

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> set[str]:
        """``adapter.*`` into the adapter, ``encoder.*`` (a fine-tuned encoder) into the encoder;
        everything else is the LLM's, loaded by vLLM."""
        own = {
            "adapter.": {
                **dict(self.adapter.named_parameters()),
                **dict(self.adapter.named_buffers()),
            },
            "encoder.": dict(self.encoder.named_parameters()),
        }
        loaded: set[str] = set()

        def llm_weights():
            for name, tensor in weights:
                prefix = name[: name.index(".") + 1] if "." in name else ""
                if prefix not in own:
                    yield name, tensor
                    continue
                params, key = own[prefix], name.removeprefix(prefix)
                if key not in params:
                    raise ValueError(f"unexpected weight {name!r} in the checkpoint")
                with torch.no_grad():
                    params[key].copy_(tensor.to(params[key].dtype))
                loaded.add(name)

        for name in self.language_model.load_weights(llm_weights()):
            loaded.add(f"language_model.{name}")
        missing = set(own["adapter."]) - {n.removeprefix("adapter.") for n in loaded}
        if missing:
            raise ValueError(f"the checkpoint lacks adapter weights: {sorted(missing)[:4]}")
        if self.spec.encoder_finetuned:  # (finding its weights costs a backward pass)
            got = {n.removeprefix("encoder.") for n in loaded if n.startswith("encoder.")}
            lacking = set(self.encoder.trainable_state_names()) - got
            if lacking:
                raise ValueError(
                    "the config says the encoder was fine-tuned but the checkpoint lacks "
                    f"{sorted(lacking)[:4]}"
                )
        # the rest of the encoder (all of it, if not fine-tuned) came from its package
        loaded.update(f"encoder.{n}" for n, _ in self.encoder.named_parameters())
        loaded.update(f"encoder.{n}" for n, _ in self.encoder.named_buffers())
        loaded.update(f"adapter.{n}" for n, _ in self.adapter.named_buffers())
        return loaded

    def get_mm_mapping(self) -> MultiModelKeys:
        return MultiModelKeys.from_string_field(
            language_model="language_model", connector="adapter", tower_model="encoder"
        )
