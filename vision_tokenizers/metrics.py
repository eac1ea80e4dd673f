"""Reconstruction metrics for tokenizers: PSNR and SSIM (torchmetrics) on images in [-1, 1]."""

from __future__ import annotations

import torch
from torchmetrics.functional.image import (
    peak_signal_noise_ratio,
    structural_similarity_index_measure,
)


def _unit(x: torch.Tensor) -> torch.Tensor:
    return ((x.float() + 1) / 2).clamp(0, 1)


def psnr(reconstruction: torch.Tensor, target: torch.Tensor) -> float:
    """Peak signal-to-noise ratio in dB (images in [-1, 1], compared in [0, 1])."""
    return float(peak_signal_noise_ratio(_unit(reconstruction), _unit(target), data_range=1.0))


def ssim(reconstruction: torch.Tensor, target: torch.Tensor) -> float:
    """Structural similarity (Gaussian window 11, sigma 1.5), images in [-1, 1]."""
    return float(
        structural_similarity_index_measure(_unit(reconstruction), _unit(target), data_range=1.0)
    )
