"""Train a discrete image tokenizer from a recipe (``mmllm train recipes/tokenizer_*.yaml``).

transformers' Trainer runs the loop (so accelerate / torchrun scale it like the model recipes);
this module supplies the data (every image under a folder: the generated sets or a user's own
photos), the objective and the report. Objective: L1 / L2 reconstruction + the quantizer's own
term (commitment / entropy) + optionally

- ``align``: VA-VAE-style alignment (Yao et al., arXiv:2501.01423) of the latents, through a
  linear map, to frozen EfficientNet-lite0 features (cosine distance), which speeds convergence
  and keeps ids semantic;
- ``perturb``: latent perturbation -- each token is replaced by a random code with this
  probability before decoding, so the decoder tolerates a generator's sampling errors.

The final folder holds the tokenizer (``config.json`` + ``model.safetensors``), ``metrics.json``
(PSNR, SSIM, codebook usage on the eval images) and ``reconstructions.png``.
"""

from __future__ import annotations

import json
import logging
import math
import random
from dataclasses import asdict
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset
from transformers import Trainer, TrainingArguments

from mmllm.errors import MMLLMError
from mmllm.recipe import TokenizerRecipe
from mmllm.vision_tokenizers.discrete import DiscreteTokenizer, TokenizerConfig, build_tokenizer
from mmllm.vision_tokenizers.images import IMAGENET_MEAN, IMAGENET_STD, load_image
from mmllm.vision_tokenizers.metrics import psnr, ssim

log = logging.getLogger(__name__)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


def image_files(folder: Path) -> list[Path]:
    """Every image under ``folder`` (sorted, so runs are reproducible)."""
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise MMLLMError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)}) found")
    return files


class ImageFolder(Dataset):
    """Images of one folder tree as tokenizer pixels in ``[-1, 1]``."""

    def __init__(self, files: list[Path], tokenizer: DiscreteTokenizer):
        self.files, self.tokenizer = files, tokenizer

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"pixel_values": self.tokenizer.preprocess(load_image(self.files[i]))[0]}


class TokenizerObjective(nn.Module):
    """The training loss around a tokenizer (the tokenizer alone is what gets saved)."""

    def __init__(self, tokenizer: DiscreteTokenizer, losses, teacher: nn.Module | None = None):
        super().__init__()
        self.tokenizer, self.losses, self.teacher = tokenizer, losses, teacher
        if teacher is not None:
            teacher.requires_grad_(False).eval()
            self.align_proj = nn.Linear(tokenizer.config.latent_dim, teacher.hidden_size)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()
        return self

    def _align_loss(self, pixels: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        size = self.teacher.image_size
        x = F.interpolate((pixels + 1) / 2, size=(size, size), mode="bilinear", antialias=True)
        mean = x.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        std = x.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
        with torch.no_grad():
            feats = self.teacher.features((x - mean) / std)  # [B, C, h, w]
        grid = self.tokenizer.grid
        if grid[0] == 1:  # 1D tokens: align the mean latent with the pooled feature
            target, pred = feats.mean((2, 3)), self.align_proj(latents.mean(1))
        else:
            target = F.interpolate(feats, size=grid, mode="bilinear").flatten(2).transpose(1, 2)
            pred = self.align_proj(latents)
        return (1 - F.cosine_similarity(pred, target, dim=-1)).mean()

    def forward(self, pixel_values: torch.Tensor) -> dict[str, torch.Tensor]:
        tok, w = self.tokenizer, self.losses
        latents = tok.encode_latents(pixel_values)
        quantized, ids, aux = tok.quantizer(latents)
        if self.training and w.perturb > 0 and ids.dim() == 2:
            swap = torch.rand(ids.shape, device=ids.device) < w.perturb
            random_ids = torch.randint_like(ids, tok.quantizer.codebook_size)
            quantized = torch.where(
                swap.unsqueeze(-1), tok.quantizer.ids_to_codes(random_ids).to(quantized), quantized
            )
        recon = tok.decode_latents(quantized)
        loss = aux.loss + w.l1 * (recon - pixel_values).abs().mean()
        if w.l2:
            loss = loss + w.l2 * F.mse_loss(recon, pixel_values)
        if self.teacher is not None and w.align:
            loss = loss + w.align * self._align_loss(pixel_values, latents)
        return {"loss": loss}


@torch.no_grad()
def evaluate_tokenizer(tokenizer: DiscreteTokenizer, files: list[Path], batch_size: int = 16):
    """PSNR, SSIM and codebook usage of reconstructions; returns metrics and one image batch."""
    tokenizer.eval()
    scores, originals, recons, all_ids = [], [], [], []
    for i in range(0, len(files), batch_size):
        pixels = tokenizer.preprocess([load_image(f) for f in files[i : i + batch_size]])
        out = tokenizer(pixels)
        recon = out.reconstruction.clamp(-1, 1)
        scores.append((psnr(recon, pixels), ssim(recon, pixels), len(pixels)))
        originals.append(pixels)
        recons.append(recon)
        all_ids.append(out.ids.reshape(-1))
    n = sum(s[2] for s in scores)
    ids = torch.cat(all_ids)
    metrics = {
        "psnr": sum(s[0] * s[2] for s in scores) / n,
        "ssim": sum(s[1] * s[2] for s in scores) / n,
        "codebook_usage": ids.unique().numel() / tokenizer.quantizer.codebook_size,
        "tokens_per_image": tokenizer.num_tokens,
        "n": n,
    }
    return metrics, torch.cat(originals), torch.cat(recons)


def fit_pixel_mean(tokenizer: DiscreteTokenizer, files: list[Path], limit: int = 2048) -> None:
    """Centre ``tokenizer`` on the mean of (up to ``limit``, evenly spaced) training images."""
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm

    subset = files[:: max(1, len(files) // limit)][:limit]
    batches = DataLoader(ImageFolder(subset, tokenizer), batch_size=64)
    tokenizer.fit_pixel_mean(
        b["pixel_values"] for b in tqdm(batches, desc="mean image", leave=False)
    )


def save_grid(originals: torch.Tensor, recons: torch.Tensor, path: Path, n: int = 8) -> None:
    """Originals (top row) over reconstructions (bottom row) as one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = min(n, len(originals))
    fig, axes = plt.subplots(2, n, figsize=(1.6 * n, 3.4), squeeze=False)
    for j in range(n):
        for row, images in enumerate((originals, recons)):
            axes[row][j].imshow(((images[j].permute(1, 2, 0) + 1) / 2).clamp(0, 1).numpy())
            axes[row][j].axis("off")
    axes[0][0].set_title("original", fontsize=8, loc="left")
    axes[1][0].set_title("reconstruction", fontsize=8, loc="left")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def step_training_args(out: Path, steps: int, batch_size: int, t, smoke: bool) -> TrainingArguments:
    """Trainer settings shared by the step-counted recipes (tokenizer, generator): cosine lr
    with warm-up, checkpoints every ``t.save_steps`` (two kept), CPU when there is no GPU.
    ``t`` is the recipe's train section (``lr``, ``warmup_ratio``, ``logging_steps``,
    ``save_steps``, ``seed``); at smoke size one log per step and one checkpoint at the end."""
    return TrainingArguments(
        output_dir=str(out),
        per_device_train_batch_size=batch_size,
        learning_rate=t.lr,
        lr_scheduler_type="cosine",
        warmup_steps=math.ceil(t.warmup_ratio * steps),
        max_steps=steps,
        logging_steps=1 if smoke else t.logging_steps,
        save_strategy="steps",
        save_steps=steps if smoke else t.save_steps,
        save_total_limit=2,
        report_to=[],
        remove_unused_columns=False,
        dataloader_num_workers=0,
        seed=t.seed,
        use_cpu=not torch.cuda.is_available(),
        disable_tqdm=False,
    )


class TokenizerTrainer(Trainer):
    def _save(self, output_dir: str | None = None, state_dict=None) -> None:
        super()._save(output_dir, state_dict)
        folder = Path(output_dir or self.args.output_dir)
        (folder / "tokenizer_config.json").write_text(
            json.dumps(asdict(self.model.tokenizer.config), indent=1)
        )


def train_tokenizer(recipe: TokenizerRecipe, smoke: bool = False, resume: bool = False) -> Path:
    """Run a tokenizer recipe; returns the folder of the trained tokenizer."""
    recipe.check_paths()
    t, s = recipe.train, recipe.smoke
    torch.manual_seed(t.seed)
    tokenizer = build_tokenizer(TokenizerConfig(**recipe.tokenizer.model_dump()))
    files = image_files(recipe.data.train)
    if smoke:
        files = random.Random(t.seed).sample(files, min(s.train_samples, len(files)))
    eval_files = image_files(recipe.data.eval)[:64] if recipe.data.eval else files[:16]
    teacher = None
    if recipe.losses.align > 0:
        from mmllm.encoders import build_encoder

        teacher = build_encoder("efficientnet_lite0", 224)
    objective = TokenizerObjective(tokenizer, recipe.losses, teacher)
    out = Path(t.output_dir)
    steps = s.max_steps if smoke else t.max_steps
    args = step_training_args(out, steps, s.batch_size if smoke else t.batch_size, t, smoke)
    trainer = TokenizerTrainer(
        model=objective, args=args, train_dataset=ImageFolder(files, tokenizer)
    )
    checkpoints = sorted(out.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]))
    if tokenizer.centres_pixels:  # a resumed run loads the mean with the checkpoint
        fit_pixel_mean(tokenizer, files)
    trainer.train(resume_from_checkpoint=str(checkpoints[-1]) if resume and checkpoints else None)
    final = out / "final"
    tokenizer.save_pretrained(final)
    metrics, originals, recons = evaluate_tokenizer(tokenizer, eval_files)
    (final / "metrics.json").write_text(json.dumps(metrics, indent=1))
    save_grid(originals, recons, final / "reconstructions.png")
    (final / "recipe.yaml").write_text(recipe.model_dump_json(indent=2))
    log.info("tokenizer metrics: %s", metrics)
    return final
