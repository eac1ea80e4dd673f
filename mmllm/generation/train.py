"""``mmllm train recipes/generator_*.yaml``: teach an LLM to write image tokens.

transformers' Trainer runs the loop (``accelerate launch`` / ``torchrun`` scale it unchanged);
peft LoRA adapts the LLM and the new image rows train in full at their own learning rate. The
images of the data folder are tokenized once up front (the tokenizer is frozen). At the end a
few held-out prompts are sampled, decoded and checked (:mod:`mmllm.generation.check`); the final
folder holds the generator, ``samples.png`` and ``metrics.json``.
"""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path

import torch
from torch.utils.data import Dataset
from tqdm.auto import tqdm
from transformers import Trainer

from mmllm.generation.dataset import DrawSample, load_draw_dataset
from mmllm.generation.model import LORA_DIR, ROWS_FILE, GeneratorConfig, ImageGenerator
from mmllm.recipe import GeneratorRecipe
from mmllm.vision_tokenizers.discrete import DiscreteTokenizer
from mmllm.vision_tokenizers.images import load_image

log = logging.getLogger(__name__)


@torch.no_grad()
def tokenize_images(
    tokenizer: DiscreteTokenizer, samples: list[DrawSample], batch_size: int = 64
) -> torch.Tensor:
    """``[len(samples), N]`` ids of every sample's image."""
    out = []
    for i in tqdm(range(0, len(samples), batch_size), desc="tokenizing images", unit="batch"):
        images = [load_image(s.image) for s in samples[i : i + batch_size]]
        out.append(tokenizer.encode(images).ids)
    return torch.cat(out)


class PromptImageSet(Dataset):
    def __init__(self, samples: list[DrawSample], ids: torch.Tensor):
        self.samples, self.ids = samples, ids

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> dict:
        return {"prompt": self.samples[i].prompt, "image_ids": self.ids[i]}


class Collator:
    """Prompts -> left-padded ids; drops a prompt with probability ``cfg_dropout`` (for CFG)."""

    def __init__(self, model: ImageGenerator, seed: int):
        self.model, self.rng = model, random.Random(seed)

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        drop = self.model.config.cfg_dropout
        prompts = ["" if self.rng.random() < drop else r["prompt"] for r in rows]
        ids, mask = self.model.prompt_batch(prompts)
        return {
            "input_ids": ids,
            "attention_mask": mask,
            "image_ids": torch.stack([r["image_ids"] for r in rows]),
        }


class GeneratorTrainer(Trainer):
    """Saves the generator format; the image rows get their own learning rate."""

    rows_lr: float = 2e-3

    def _save(self, output_dir: str | None = None, state_dict=None) -> None:
        self.model.save_pretrained(output_dir or self.args.output_dir)

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        folder = Path(resume_from_checkpoint)
        self.model.image_rows.data.copy_(load_file(folder / ROWS_FILE)["image_rows"])
        lora = load_file(folder / LORA_DIR / "adapter_model.safetensors")
        set_peft_model_state_dict(self.model.llm, lora)

    def create_optimizer(self, model=None):
        if self.optimizer is None:
            lora = [p for n, p in self.model.llm.named_parameters() if p.requires_grad]
            groups = [
                {"params": [self.model.image_rows], "lr": self.rows_lr},
                {"params": lora, "lr": self.args.learning_rate},
            ]
            self.optimizer = torch.optim.AdamW(groups, weight_decay=0.0)
        return self.optimizer


def build_generator(recipe: GeneratorRecipe) -> ImageGenerator:
    from peft import LoraConfig, get_peft_model

    g = recipe.generator
    extra = {"template": g.template} if g.template else {}
    config = GeneratorConfig(
        llm=g.llm, cfg_dropout=g.cfg_dropout, init_seed=recipe.train.seed, **extra
    )
    model = ImageGenerator(config, DiscreteTokenizer.from_pretrained(g.image_tokenizer))
    model.llm.requires_grad_(False)
    lora = recipe.lora
    model.llm = get_peft_model(
        model.llm,
        LoraConfig(
            r=lora.r,
            lora_alpha=lora.alpha,
            lora_dropout=lora.dropout,
            target_modules=lora.target_modules,
            use_dora=lora.dora,
        ),
    )
    return model


def train_generator(recipe: GeneratorRecipe, smoke: bool = False, resume: bool = False) -> Path:
    """Run a generator recipe; returns the folder of the trained generator."""
    from mmllm.train import ThroughputAndCurve, run_and_save
    from mmllm.train_tokenizer import step_training_args

    recipe.check_paths()
    t, s = recipe.train, recipe.smoke
    torch.manual_seed(t.seed)
    model = build_generator(recipe)
    samples = load_draw_dataset(recipe.data.train)
    if smoke:
        samples = random.Random(t.seed).sample(samples, min(s.train_samples, len(samples)))
    ids = tokenize_images(model.image_tokenizer, samples)
    out = Path(t.output_dir)
    steps = s.max_steps if smoke else t.max_steps
    args = step_training_args(out, steps, s.batch_size if smoke else t.batch_size, t, smoke)
    trainer = GeneratorTrainer(
        model=model,
        args=args,
        train_dataset=PromptImageSet(samples, ids),
        data_collator=Collator(model, t.seed),
        callbacks=[ThroughputAndCurve(out)],
    )
    trainer.rows_lr = t.rows_lr
    final = run_and_save(trainer, model, recipe, resume)
    n_eval = 2 if smoke else t.eval_samples
    if recipe.data.eval and n_eval:
        from mmllm.generation.evaluate import evaluate_generator, save_samples

        eval_set = load_draw_dataset(recipe.data.eval)[:n_eval]
        report, images = evaluate_generator(model, eval_set)
        (final / "metrics.json").write_text(json.dumps(report, indent=1))
        save_samples(eval_set, images, final / "samples.png")
        log.info("generation check: %s", report["overall"])
    return final
