"""Training recipes: YAML files validated against a schema, with clear errors.

Unknown keys, wrong types and missing data folders are refused before anything loads. Every
recipe carries a ``smoke`` section: ``mmllm train RECIPE --smoke`` runs it at that size (a few
steps on a few samples), which is how the test suite runs every bundled recipe on CPU.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from mmllm.errors import MMLLMError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelSection(_Strict):
    encoder: str = "efficientnet_lite0"
    image_size: int = Field(448, gt=0)
    llm: str = "smollm2"
    adapter: str = "mlp2x_gelu"
    adapter_kwargs: dict[str, Any] = {}
    reduction: str = "identity"
    init_from: Path | None = Field(
        None, description="checkpoint whose adapter (and LoRA) to start from"
    )


class DataSection(_Strict):
    train: Path
    eval: Path | None = None
    max_train_samples: int | None = Field(None, gt=0)
    max_eval_samples: int | None = Field(None, gt=0)


class LoraSection(_Strict):
    r: int = Field(16, gt=0)
    alpha: int = Field(32, gt=0)
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: list[str] = ["q_proj", "k_proj", "v_proj", "o_proj"]
    dora: bool = False


class QuantizationSection(_Strict):
    load_in_4bit: bool = Field(
        False, description="QLoRA: 4-bit NF4 base (needs CUDA + bitsandbytes)"
    )


class _CellTargets(_Strict):
    """How regions label grid cells and how cells are pulled onto their words (stage 0, read)."""

    min_cover: float = Field(
        0.08, ge=0, lt=1, description="a region owns a cell it covers more of than this"
    )
    ce_weight: float = Field(
        0.01, ge=0, description="weight of the word cross-entropy next to the squared error"
    )
    scale: float = Field(5.0, gt=0, description="logit scale of the word cross-entropy")


class GroundingSection(_CellTargets):
    """Stage 0 (:mod:`mmllm.grounding`): the adapter alone, onto the LLM's word embeddings."""

    background: str = Field("background", description="words for cells no region covers")
    background_weight: float = Field(
        0.2, ge=0, description="weight of background cells in the squared error (objects: 1)"
    )
    place_words: bool = Field(
        False,
        description="also ground each cell in the words of its 3x3 place ('top left' ... "
        "'bottom right'); pair with model.adapter_kwargs.positions",
    )


class ReadingSection(_CellTargets):
    """The reading stage (:mod:`mmllm.reading`): encoder + adapter, text cells onto words."""

    keep_weight: float = Field(
        1.0,
        ge=0,
        description="weight of the squared error (a mean over non-text cells) that keeps their "
        "output as the model gave it before this stage; the text cells' error has weight 1",
    )


class TrainSection(_Strict):
    stage: Literal[0, 1, 2, "read"] = Field(
        1,
        description="0: ground the adapter in word embeddings (no LLM pass; rows need "
        "'regions'), 1: adapter through the frozen LLM, 2: + LoRA, read: encoder + adapter "
        "onto the words of text regions (no LLM pass; needs train.encoder_lr)",
    )
    output_dir: Path
    epochs: float = Field(1.0, gt=0)
    max_steps: int = -1
    batch_size: int = Field(8, gt=0)
    grad_accum: int = Field(1, gt=0)
    lr: float = Field(1e-3, gt=0)
    adapter_lr: float | None = Field(None, gt=0, description="adapter lr in stage 2 (default: lr)")
    encoder_lr: float | None = Field(
        None,
        gt=0,
        description="fine-tune the vision encoder at this lr (its BatchNorm statistics stay "
        "frozen; the checkpoint then stores encoder.safetensors); default: encoder frozen",
    )
    warmup_ratio: float = Field(0.03, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    eval_steps: int = Field(200, gt=0)
    save_steps: int = Field(200, gt=0)
    logging_steps: int = Field(10, gt=0)
    seed: int = 0
    bf16: bool = Field(False, description="bf16 autocast (CPU and GPU)")
    reduction_budgets: list[str] | None = Field(
        None,
        min_length=1,
        description="reducer specs (before the LLM) drawn one per training batch, so the "
        "adapter/LoRA learn to read reduced tokens at several budgets (TokenFLEX-style); eval "
        "stays at model.reduction",
    )

    @model_validator(mode="after")
    def _budgets_are_before_llm_specs(self) -> TrainSection:
        if not self.reduction_budgets:
            return self
        from mmllm.reduction import build
        from mmllm.reduction.in_llm import split_in_llm

        for spec in self.reduction_budgets:
            try:
                reducer = build(spec)
            except MMLLMError as err:
                raise ValueError(f"reduction_budgets: {spec!r}: {err}") from None
            if split_in_llm(reducer)[1] is not None:
                raise ValueError(
                    f"reduction_budgets: {spec!r} prunes inside the LLM; training draws only "
                    "reducers that run before it"
                )
        return self


class SmokeSection(_Strict):
    max_steps: int = Field(2, gt=0)
    train_samples: int = Field(8, gt=0)
    eval_samples: int = Field(4, gt=0)
    batch_size: int = Field(2, gt=0)
    image_size: int | None = Field(224, gt=0)


class Recipe(_Strict):
    name: str
    description: str = ""
    model: ModelSection = ModelSection()
    data: DataSection
    train: TrainSection
    lora: LoraSection | None = None
    quantization: QuantizationSection = QuantizationSection()
    smoke: SmokeSection = SmokeSection()
    grounding: GroundingSection = GroundingSection()
    reading: ReadingSection = ReadingSection()

    @model_validator(mode="after")
    def _stage_two_needs_lora(self) -> Recipe:
        stage = self.train.stage
        if stage in (0, "read") and (self.lora or self.train.reduction_budgets):
            raise ValueError(
                f"stage {stage} trains on full token grids with no LLM pass: remove 'lora' and "
                "train.reduction_budgets (use them in a later stage with model.init_from)"
            )
        if stage == "read" and self.train.encoder_lr is None:
            raise ValueError("stage read fine-tunes the encoder: set train.encoder_lr")
        if self.train.stage == 2 and self.lora is None:
            raise ValueError("stage 2 trains LoRA on the LLM: add a 'lora' section")
        if self.quantization.load_in_4bit and self.lora is None:
            raise ValueError("load_in_4bit (QLoRA) needs a 'lora' section")
        if self.train.reduction_budgets and "train_sides" in self.model.adapter_kwargs:
            raise ValueError(
                "train.reduction_budgets and adapter_kwargs.train_sides both draw a budget per "
                "batch: use one"
            )
        return self

    def check_paths(self) -> None:
        """Missing data folders or init checkpoints are user errors, found before loading."""
        for label, path in (
            ("data.train", self.data.train),
            ("data.eval", self.data.eval),
            ("model.init_from", self.model.init_from),
        ):
            if path is not None and not path.exists():
                hint = " (make one with `mmllm data make`)" if label.startswith("data") else ""
                raise MMLLMError(f"recipe '{self.name}': {label} = {path} does not exist{hint}")


class TokenizerModelSection(_Strict):
    """``TokenizerConfig`` of :mod:`mmllm.vision_tokenizers.discrete`."""

    kind: Literal["conv2d", "titok"] = "conv2d"
    image_size: int = Field(64, gt=0)
    channels: int = Field(64, gt=0)
    latent_dim: int = Field(8, gt=0)
    downsample: int = Field(8, gt=0)
    num_latents: int = Field(32, gt=0)
    patch_size: int = Field(8, gt=0)
    depth: int = Field(4, gt=0)
    heads: int = Field(4, gt=0)
    quantizer: dict[str, Any] = {"name": "fsq", "levels": [8, 5, 5, 5]}


class TokenizerLossSection(_Strict):
    l1: float = Field(1.0, ge=0, description="weight of |x - x_hat|")
    l2: float = Field(0.0, ge=0, description="weight of |x - x_hat|^2")
    align: float = Field(
        0.0, ge=0, description="VA-VAE alignment of latents to frozen EfficientNet features"
    )
    perturb: float = Field(
        0.0, ge=0, lt=1, description="probability of replacing a token by a random code"
    )


class TokenizerTrainSection(_Strict):
    output_dir: Path
    max_steps: int = Field(1000, gt=0)
    batch_size: int = Field(16, gt=0)
    lr: float = Field(1e-3, gt=0)
    warmup_ratio: float = Field(0.02, ge=0, lt=1)
    save_steps: int = Field(200, gt=0)
    logging_steps: int = Field(10, gt=0)
    seed: int = 0


class TokenizerSmokeSection(_Strict):
    max_steps: int = Field(2, gt=0)
    train_samples: int = Field(8, gt=0)
    batch_size: int = Field(2, gt=0)


class TokenizerRecipe(_Strict):
    """A discrete image tokenizer trained on a folder of images (``tokenizer:`` section)."""

    name: str
    description: str = ""
    tokenizer: TokenizerModelSection = TokenizerModelSection()
    data: DataSection
    losses: TokenizerLossSection = TokenizerLossSection()
    train: TokenizerTrainSection
    smoke: TokenizerSmokeSection = TokenizerSmokeSection()

    def check_paths(self) -> None:
        for label, path in (("data.train", self.data.train), ("data.eval", self.data.eval)):
            if path is not None and not path.exists():
                raise MMLLMError(f"recipe '{self.name}': {label} = {path} does not exist")


class GeneratorModelSection(_Strict):
    """What :class:`mmllm.generation.model.ImageGenerator` is built from."""

    llm: str = "smollm2"
    image_tokenizer: Path = Field(description="folder of a trained discrete tokenizer")
    cfg_dropout: float = Field(0.1, ge=0, lt=1, description="share of prompts dropped (for CFG)")
    template: str | None = Field(
        None, description="prompt format with '{prompt}' (default: ChatML, as SmolLM2 uses)"
    )


class GeneratorTrainSection(_Strict):
    output_dir: Path
    max_steps: int = Field(500, gt=0)
    batch_size: int = Field(16, gt=0)
    lr: float = Field(5e-4, gt=0, description="LoRA learning rate")
    rows_lr: float = Field(2e-3, gt=0, description="learning rate of the new image rows")
    warmup_ratio: float = Field(0.03, ge=0, lt=1)
    save_steps: int = Field(100, gt=0)
    logging_steps: int = Field(10, gt=0)
    eval_samples: int = Field(32, ge=0, description="prompts sampled and checked at the end")
    seed: int = 0


class GeneratorSmokeSection(_Strict):
    max_steps: int = Field(2, gt=0)
    train_samples: int = Field(8, gt=0)
    batch_size: int = Field(2, gt=0)


class GeneratorRecipe(_Strict):
    """An LLM taught to write image tokens (``generator:`` section; data from make-draw)."""

    name: str
    description: str = ""
    generator: GeneratorModelSection
    data: DataSection
    lora: LoraSection = LoraSection()
    train: GeneratorTrainSection
    smoke: GeneratorSmokeSection = GeneratorSmokeSection()

    def check_paths(self) -> None:
        for label, path in (
            ("data.train", self.data.train),
            ("data.eval", self.data.eval),
            ("generator.image_tokenizer", self.generator.image_tokenizer),
        ):
            if path is not None and not path.exists():
                hint = {
                    "data": " (make one with `mmllm data make-draw`)",
                    "gene": " (train one with `mmllm train recipes/tokenizer_draw.yaml`)",
                }[label[:4]]
                raise MMLLMError(f"recipe '{self.name}': {label} = {path} does not exist{hint}")


def _set(tree: dict, dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    for key in parents:
        tree = tree.setdefault(key, {})
    tree[leaf] = value


def load_recipe(
    path: str | Path, overrides: dict[str, Any] | None = None
) -> Recipe | TokenizerRecipe | GeneratorRecipe:
    """Read and validate a recipe; ``overrides`` set dotted keys (``{"data.train": "..."}``).

    A recipe with a ``tokenizer`` section trains a discrete image tokenizer, one with a
    ``generator`` section an LLM that writes image tokens; any other trains the
    vision-language model. Relative paths are resolved against the working directory.
    """
    path = Path(path)
    if not path.is_file():
        from mmllm import recipes

        if path.suffix != ".yaml" and recipes.path(str(path)).is_file():
            path = recipes.path(str(path))
        else:
            known = ", ".join(recipes.available())
            raise MMLLMError(f"recipe {path} not found; bundled recipes: {known}")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise MMLLMError(f"{path}: not valid YAML ({err})") from None
    if not isinstance(raw, dict):
        raise MMLLMError(f"{path}: a recipe is a YAML mapping")
    for key, value in (overrides or {}).items():
        _set(raw, key, value)
    schema = (
        TokenizerRecipe if "tokenizer" in raw else GeneratorRecipe if "generator" in raw else Recipe
    )
    try:
        return schema.model_validate(raw)
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'recipe'}: {e['msg']}" for e in err.errors()
        )
        raise MMLLMError(f"{path}: invalid recipe: {problems}") from None
