"""``mmllm train RECIPE``: transformers' Trainer on an mmllm model (adapter, then LoRA).

Because the loop is the Trainer's, ``accelerate launch`` / ``torchrun`` run the same recipe on
many GPUs or nodes (DDP, FSDP, DeepSpeed) with no code change. Stage 1 trains the adapter only;
stage 2 adds peft LoRA (optionally DoRA, optionally on a 4-bit NF4 base: QLoRA) to the LLM.
Checkpoints hold the adapter and LoRA together; ``resume`` continues from the last one. A loss
curve is saved as ``loss.png`` in the output folder.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from pathlib import Path

import torch
from transformers import Trainer, TrainerCallback, TrainingArguments

from mmllm.data.dataset import Sample, load_dataset
from mmllm.errors import MMLLMError
from mmllm.modeling import (
    ADAPTER_FILE,
    ENCODER_FILE,
    MMLLMConfig,
    MMLLMForConditionalGeneration,
)
from mmllm.processor import MMLLMProcessor
from mmllm.recipe import Recipe

log = logging.getLogger(__name__)


class Collator:
    """Samples -> a padded training batch, at a budget drawn per batch (TokenFLEX-style).

    For training batches it draws a pooled side for ``pool_swiglu`` (its ``train_sides``) or a
    reducer spec from ``budgets`` (``train.reduction_budgets``), so one checkpoint learns to
    read several token counts; ``train=False`` (the eval collator) keeps the configured budget,
    so eval losses stay comparable across steps.
    """

    def __init__(
        self,
        processor: MMLLMProcessor,
        model: MMLLMForConditionalGeneration,
        seed: int,
        budgets: list[str] | None = None,
        train: bool = True,
    ):
        self.processor = processor
        self.sides = getattr(model.adapter, "train_sides", None) if train else None
        self.budgets = budgets if train else None
        self.model = model
        self.rng = random.Random(seed)

    def __call__(self, samples: list[Sample]) -> dict[str, torch.Tensor]:
        side = self.rng.choice(self.sides) if self.sides else None
        spec = self.rng.choice(self.budgets) if self.budgets else None
        seq_len = None
        if side:
            seq_len = self.model.num_image_tokens(side)
        elif spec:
            seq_len = self.model.num_image_tokens(reduction=spec)
        batch = self.processor(
            [s.messages for s in samples],
            [s.images for s in samples],
            train=True,
            image_seq_len=seq_len,
        )
        if side:
            batch["adapter_side"] = side
        if spec:
            batch["reduction"] = spec
        return batch


class MMLLMTrainer(Trainer):
    """Trainer with mmllm's checkpoint format (adapter + LoRA safetensors) and lr groups."""

    adapter_lr: float | None = None
    encoder_lr: float | None = None
    eval_collator: Collator | None = None

    def get_eval_dataloader(self, eval_dataset=None):
        """Eval batches at the configured budget (training batches may draw one per batch)."""
        collator, self.data_collator = self.data_collator, self.eval_collator or self.data_collator
        try:
            return super().get_eval_dataloader(eval_dataset)
        finally:
            self.data_collator = collator

    def _save(self, output_dir: str | None = None, state_dict=None) -> None:
        self.model.save_pretrained(output_dir or self.args.output_dir)
        torch.save(self.args, Path(output_dir or self.args.output_dir) / "training_args.bin")

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        from safetensors.torch import load_file

        folder = Path(resume_from_checkpoint)
        vlm = getattr(self.model, "vlm", self.model)  # stage 0 / read train an objective around it
        vlm.adapter.load_state_dict(load_file(folder / ADAPTER_FILE))
        if (folder / ENCODER_FILE).is_file():
            vlm.load_encoder_state(load_file(folder / ENCODER_FILE))
        if (folder / "lora").is_dir():
            from peft import set_peft_model_state_dict
            from safetensors.torch import load_file as load_lora

            set_peft_model_state_dict(
                vlm.llm, load_lora(folder / "lora" / "adapter_model.safetensors")
            )

    def _load_best_model(self) -> None:  # pragma: no cover - not used (load_best_model_at_end off)
        pass

    def create_optimizer(self, model=None):
        if self.optimizer is None:
            adapter = [p for p in self.model.adapter.parameters() if p.requires_grad]
            encoder = [p for p in self.model.encoder.parameters() if p.requires_grad]
            grouped = {id(p) for p in adapter + encoder}
            others = [
                p for p in self.model.parameters() if p.requires_grad and id(p) not in grouped
            ]
            groups = [{"params": adapter, "lr": self.adapter_lr or self.args.learning_rate}]
            if encoder:
                groups.append({"params": encoder, "lr": self.encoder_lr or self.args.learning_rate})
            if others:
                groups.append({"params": others, "lr": self.args.learning_rate})
            self.optimizer = torch.optim.AdamW(groups, weight_decay=self.args.weight_decay)
        return self.optimizer


class ThroughputAndCurve(TrainerCallback):
    """Logs tokens/s next to the loss, and draws the loss curve as PNG at every save and the end."""

    def __init__(self, output_dir: Path):
        self.output_dir = output_dir
        self.start = time.perf_counter()

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs is not None and state.num_input_tokens_seen:
            logs["tokens_per_s"] = round(
                state.num_input_tokens_seen / (time.perf_counter() - self.start), 1
            )

    def on_save(self, args, state, control, **kwargs):
        plot_loss(state.log_history, self.output_dir / "loss.png")

    def on_train_end(self, args, state, control, **kwargs):
        plot_loss(state.log_history, self.output_dir / "loss.png")
        (self.output_dir / "log_history.json").write_text(json.dumps(state.log_history, indent=1))


def plot_loss(history: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [(h["step"], h["loss"]) for h in history if "loss" in h]
    evals = [(h["step"], h["eval_loss"]) for h in history if "eval_loss" in h]
    if not train and not evals:
        return
    fig, ax = plt.subplots(figsize=(6, 3.5))
    if train:
        ax.plot(*zip(*train, strict=True), label="train loss")
    if evals:
        ax.plot(*zip(*evals, strict=True), "o-", label="eval loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def add_lora(model: MMLLMForConditionalGeneration, recipe: Recipe) -> None:
    from peft import LoraConfig, get_peft_model

    cfg = recipe.lora
    names = {name.rsplit(".", 1)[-1] for name, _ in model.llm.named_modules()}
    missing = [t for t in cfg.target_modules if t not in names]
    if missing:
        linear = sorted(
            {
                n.rsplit(".", 1)[-1]
                for n, m in model.llm.named_modules()
                if isinstance(m, torch.nn.Linear)
            }
        )
        raise MMLLMError(
            f"LoRA target_modules {missing} match no module of {type(model.llm).__name__}; "
            f"its linear layers are: {', '.join(linear)}"
        )
    lora = LoraConfig(
        r=cfg.r,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        target_modules=cfg.target_modules,
        use_dora=cfg.dora,
        task_type="CAUSAL_LM",
    )
    model.llm = get_peft_model(model.llm, lora)


def check_quantization(recipe: Recipe) -> None:
    if not recipe.quantization.load_in_4bit:
        return
    if not torch.cuda.is_available():
        raise MMLLMError(
            f"recipe '{recipe.name}' asks for QLoRA (load_in_4bit) which needs a CUDA GPU with "
            "bitsandbytes; this machine has none. Set quantization.load_in_4bit: false for LoRA"
        )
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise MMLLMError("QLoRA needs bitsandbytes: pip install 'mmllm[train]'") from None


def build_model(recipe: Recipe, image_size: int) -> MMLLMForConditionalGeneration:
    m = recipe.model
    if m.init_from is not None:
        model = MMLLMForConditionalGeneration.from_pretrained(
            m.init_from, reduction=m.reduction, wider_encoder=m.encoder
        )
    else:
        config = MMLLMConfig(
            encoder=m.encoder,
            image_size=image_size,
            llm=m.llm,
            adapter=m.adapter,
            adapter_kwargs=m.adapter_kwargs,
            reduction=m.reduction,
        )
        if recipe.quantization.load_in_4bit:
            from transformers import AutoModelForCausalLM, BitsAndBytesConfig

            from mmllm.llm import load_llm, smollm2_path

            _, tokenizer = load_llm(m.llm)
            path = smollm2_path() if m.llm == "smollm2" else m.llm
            llm = AutoModelForCausalLM.from_pretrained(
                path,
                quantization_config=BitsAndBytesConfig(
                    load_in_4bit=True, bnb_4bit_quant_type="nf4"
                ),
            )
            model = MMLLMForConditionalGeneration(config, llm=llm, tokenizer=tokenizer)
        else:
            model = MMLLMForConditionalGeneration(config)
    model.llm.requires_grad_(False)
    if recipe.train.stage == 2 and not hasattr(model.llm, "peft_config"):
        add_lora(model, recipe)
    elif hasattr(model.llm, "peft_config"):  # continuing a LoRA checkpoint
        for name, p in model.llm.named_parameters():
            p.requires_grad_("lora_" in name and recipe.train.stage == 2)
    model.adapter.requires_grad_(True)
    if recipe.train.encoder_lr is not None:
        model.unfreeze_encoder()
    return model


def train(recipe: Recipe, smoke: bool = False, resume: bool = False) -> Path:
    """Run a recipe; returns the folder of the final checkpoint."""
    recipe.check_paths()
    check_quantization(recipe)
    t, s = recipe.train, recipe.smoke
    image_size = (s.image_size or recipe.model.image_size) if smoke else recipe.model.image_size
    train_set = load_dataset(recipe.data.train)
    eval_set = load_dataset(recipe.data.eval) if recipe.data.eval else None
    n_train = s.train_samples if smoke else recipe.data.max_train_samples
    n_eval = s.eval_samples if smoke else recipe.data.max_eval_samples
    rng = random.Random(t.seed)
    if n_train and n_train < len(train_set):
        train_set = rng.sample(train_set, n_train)
    if eval_set and n_eval and n_eval < len(eval_set):
        eval_set = eval_set[:n_eval]

    torch.manual_seed(t.seed)
    model = build_model(recipe, image_size)
    out = Path(t.output_dir)
    if t.stage == 0:
        return _train_grounding(recipe, model, train_set, eval_set, smoke, resume)
    if t.stage == "read":
        return _train_reading(recipe, model, train_set, eval_set, smoke, resume)
    processor = MMLLMProcessor.from_model(model)
    n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    log.info("training %s parameters (%d samples)", f"{n_trainable:,}", len(train_set))
    args = _training_args(recipe, smoke, len(train_set), eval_set is not None)
    trainer = MMLLMTrainer(
        model=model,
        args=args,
        train_dataset=train_set,
        eval_dataset=eval_set,
        data_collator=Collator(processor, model, t.seed, t.reduction_budgets),
        callbacks=[ThroughputAndCurve(out)],
    )
    trainer.eval_collator = Collator(processor, model, t.seed, train=False)
    trainer.adapter_lr = t.adapter_lr
    trainer.encoder_lr = t.encoder_lr
    return run_and_save(trainer, model, recipe, resume)


def run_and_save(trainer: Trainer, model, recipe, resume: bool) -> Path:
    """Train (from the output folder's last checkpoint when ``resume``), then save the model
    and the recipe that made it to ``output_dir/final``; returns that folder."""
    out = Path(recipe.train.output_dir)
    last = _last_checkpoint(out) if resume else None
    trainer.train(resume_from_checkpoint=str(last) if last else None)
    final = out / "final"
    model.save_pretrained(final)
    (final / "recipe.yaml").write_text(recipe.model_dump_json(indent=2))
    return final


def _train_grounding(recipe, model, train_set, eval_set, smoke: bool, resume: bool) -> Path:
    """Stage 0 (:mod:`mmllm.grounding`): cache encoder tokens once, then train the adapter
    alone onto the LLM's word embeddings with the same Trainer (checkpoints, resume, curve)."""
    from mmllm.grounding import (
        GroundingObjective,
        build_grounding_data,
        phrase_list,
        write_report,
    )

    g = recipe.grounding
    _check_token_wise(model, "stage 0")
    phrases = phrase_list(train_set + (eval_set or []), g.background)
    train_data = build_grounding_data(model, train_set, phrases, g.min_cover)
    eval_data = None
    if eval_set is not None and any(s.regions for s in eval_set):
        eval_data = build_grounding_data(model, eval_set, phrases, g.min_cover)
    objective = GroundingObjective(
        model, train_data.phrases, g.ce_weight, g.scale, g.background_weight, g.place_words
    )
    log.info(
        "stage 0: %d images, %d phrases, %d words",
        len(train_data),
        len(train_data.phrases),
        len(objective.words),
    )
    final = _train_objective(recipe, model, objective, train_data, eval_data, smoke, resume)
    write_report(objective, eval_data or train_data, final)
    return final


def _train_reading(recipe, model, train_set, eval_set, smoke: bool, resume: bool) -> Path:
    """The reading stage (:mod:`mmllm.reading`): encoder + adapter onto the words of text
    regions, every other cell held at the model's output before the stage."""
    from mmllm.reading import (
        ReadingObjective,
        build_reading_data,
        reading_phrases,
        write_reading_report,
    )

    r = recipe.reading
    _check_token_wise(model, "the reading stage")
    phrases = reading_phrases(train_set + (eval_set or []))
    train_data = build_reading_data(model, train_set, phrases, r.min_cover)
    eval_data = None
    if eval_set is not None and any(s.regions for s in eval_set):
        eval_data = build_reading_data(model, eval_set, phrases, r.min_cover)
    objective = ReadingObjective(model, phrases, r.ce_weight, r.scale, r.keep_weight)
    log.info(
        "reading stage: %d images, %d phrases, %d words",
        len(train_data),
        len(phrases),
        len(objective.words),
    )
    final = _train_objective(recipe, model, objective, train_data, eval_data, smoke, resume)
    write_reading_report(objective, eval_data or train_data, final)
    return final


def _train_objective(recipe, model, objective, train_data, eval_data, smoke, resume) -> Path:
    """Train an objective that wraps ``model`` (stage 0, reading: no LLM pass) with the same
    Trainer as the LLM stages (checkpoints, resume, curve); returns the final folder."""
    from transformers import default_data_collator

    t = recipe.train
    args = _training_args(recipe, smoke, len(train_data), eval_data is not None, lm=False)
    trainer = MMLLMTrainer(
        model=objective,
        args=args,
        train_dataset=train_data,
        eval_dataset=eval_data,
        data_collator=default_data_collator,
        callbacks=[ThroughputAndCurve(Path(t.output_dir))],
    )
    trainer.adapter_lr = t.adapter_lr
    trainer.encoder_lr = t.encoder_lr
    return run_and_save(trainer, model, recipe, resume)


def _check_token_wise(model, what: str) -> None:
    grid = model.encoder.grid
    if (
        model.adapter.token_projector() is None
        or model.adapter.output_len(grid[0] * grid[1], grid) != grid[0] * grid[1]
    ):
        raise MMLLMError(
            f"{what} trains each visual token on its own: adapter '{model.config.adapter}' "
            "does not map tokens one to one (use mlp2x_gelu)"
        )


def _training_args(
    recipe: Recipe, smoke: bool, n_train: int, has_eval: bool, lm: bool = True
) -> TrainingArguments:
    """The Trainer's arguments from a recipe (its smoke size when ``smoke``); ``lm=False`` for
    stage 0, whose batches have no token ids to count and whose eval computes only the loss."""
    t, s = recipe.train, recipe.smoke
    out = Path(t.output_dir)
    return TrainingArguments(
        output_dir=str(out),
        per_device_train_batch_size=s.batch_size if smoke else t.batch_size,
        per_device_eval_batch_size=s.batch_size if smoke else t.batch_size,
        gradient_accumulation_steps=1 if smoke else t.grad_accum,
        learning_rate=t.lr,
        weight_decay=t.weight_decay,
        lr_scheduler_type="cosine",
        warmup_steps=0
        if smoke
        else max(0, math.ceil(t.warmup_ratio * _total_steps(recipe, n_train))),
        num_train_epochs=t.epochs,
        max_steps=s.max_steps if smoke else t.max_steps,
        logging_steps=1 if smoke else t.logging_steps,
        eval_strategy="steps" if has_eval else "no",
        eval_steps=s.max_steps if smoke else t.eval_steps,
        save_strategy="steps",
        save_steps=s.max_steps if smoke else t.save_steps,
        save_total_limit=2,
        report_to=[],
        remove_unused_columns=False,
        dataloader_num_workers=0,
        seed=t.seed,
        bf16=t.bf16,
        use_cpu=not torch.cuda.is_available(),
        include_num_input_tokens_seen=lm,
        prediction_loss_only=not lm,
        disable_tqdm=False,
    )


def _total_steps(recipe: Recipe, n: int) -> int:
    t = recipe.train
    if t.max_steps > 0:
        return t.max_steps
    return math.ceil(n / (t.batch_size * t.grad_accum) * t.epochs)


def _last_checkpoint(folder: Path) -> Path | None:
    checkpoints = sorted(folder.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]))
    return checkpoints[-1] if checkpoints else None
