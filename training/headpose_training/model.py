"""The Multi-task Neural Network (MNN) of Valle et al., and nothing else.

A symmetric encoder-decoder built from bottleneck residual blocks (He et al.) with lateral skip
connections between mirrored stages, BatchNorm + ReLU after every convolution. Head pose is a
holistic task, so its two fully connected heads (``p^ED`` and ``p^AE``, six numbers each) sit on
the 1x1 bottleneck; heatmaps and visibilities need spatial detail, so they sit at the decoder end
(paper section 3.1, Fig. 2).

One dataclass configures both the paper's network (256 px input, 64 to 256 channels, nine stages,
full-resolution heatmaps) and the compact one this project ships (smaller input, a strided stem
so the heatmaps come out at a fraction of the input resolution). Everything else (losses, data,
export) lives in its own module.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

__all__ = ["MNN", "MNNConfig", "MNNOutput"]


@dataclass(frozen=True)
class MNNConfig:
    """Shape of the network.

    ``stem_stride`` (1, 2 or 4) is how much a strided convolutional stem shrinks the input before
    the encoder-decoder; the decoder ends at that resolution, so ``heatmap_size`` is
    ``input_size / stem_stride``. ``channels`` lists the width of every encoder stage, first at
    the stem resolution and each next one at half the resolution; the last stage must be 1x1.
    """

    input_size: int = 128
    stem_stride: int = 4
    channels: tuple[int, ...] = (32, 48, 64, 96, 128, 128)
    num_landmarks: int = 68
    bottleneck_ratio: int = 2

    def __post_init__(self) -> None:
        """Check that the stages end exactly at a 1x1 bottleneck, as in the paper."""
        if self.stem_stride not in (1, 2, 4):
            raise ValueError(f"stem_stride must be 1, 2 or 4, got {self.stem_stride}")
        final = self.input_size / self.stem_stride / 2 ** (len(self.channels) - 1)
        if final != 1:
            raise ValueError(
                f"{len(self.channels)} stages from {self.input_size}px with stem stride "
                f"{self.stem_stride} end at {final}px, not at the 1x1 bottleneck"
            )

    @property
    def heatmap_size(self) -> int:
        """Side of the output heatmaps; they cover the whole crop."""
        return self.input_size // self.stem_stride

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form, stored in checkpoints so a checkpoint rebuilds its own network."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MNNConfig:
        """Inverse of :meth:`to_dict`."""
        fields = dict(data)
        fields["channels"] = tuple(fields["channels"])
        return cls(**fields)


@dataclass
class MNNOutput:
    """Raw network outputs: training losses work on logits, export applies softmax/sigmoid."""

    heatmap_logits: torch.Tensor  # (N, L, H, H)
    pose_ed: torch.Tensor  # (N, 6) degrees and metres
    pose_ae: torch.Tensor  # (N, 6)
    visibility_logits: torch.Tensor  # (N, L)
    extras: dict[str, torch.Tensor] = field(default_factory=dict)


def conv_bn_relu(in_ch: int, out_ch: int, kernel: int, stride: int = 1) -> nn.Sequential:
    """Convolution followed by BatchNorm and ReLU, the paper's basic layer."""
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, kernel, stride=stride, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(inplace=True),
    )


class Bottleneck(nn.Module):
    """Bottleneck residual block (1x1 reduce, 3x3, 1x1 expand); optional stride-2 downsampling.

    The projection shortcut only exists where the shape changes, as in ResNet.
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1, ratio: int = 2) -> None:
        """Build the block; ``ratio`` is how much the inner 3x3 layer is narrowed."""
        super().__init__()
        mid = max(8, out_ch // ratio)
        self.body = nn.Sequential(
            conv_bn_relu(in_ch, mid, 1),
            conv_bn_relu(mid, mid, 3, stride),
            nn.Conv2d(mid, out_ch, 1, bias=False),
            nn.BatchNorm2d(out_ch),
        )
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False), nn.BatchNorm2d(out_ch)
            )
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Residual sum, then ReLU."""
        return self.relu(self.body(x) + self.shortcut(x))


class MNN(nn.Module):
    """Encoder-decoder with pose heads at the bottleneck and heatmap/visibility heads at the end.

    ``pose_mean``/``pose_std`` are buffers set from the training labels: the FC layers regress
    standardised pose (so degrees and metres weigh alike in loss (1)), and the forward pass maps
    back to degrees and metres so exported models speak the contract's units directly.
    """

    def __init__(self, config: MNNConfig) -> None:
        """Build the stages described by ``config``."""
        super().__init__()
        self.config = config
        ch, ratio = config.channels, config.bottleneck_ratio
        stem: list[nn.Module] = [conv_bn_relu(3, ch[0], 3, 2 if config.stem_stride > 1 else 1)]
        if config.stem_stride == 4:
            stem.append(Bottleneck(ch[0], ch[0], 2, ratio))
        self.stem = nn.Sequential(*stem)
        self.encoder = nn.ModuleList(
            [Bottleneck(ch[0], ch[0], 1, ratio)]
            + [Bottleneck(ch[i - 1], ch[i], 2, ratio) for i in range(1, len(ch))]
        )
        # Decoder stage i upsamples stage i+1's output to stage i's resolution and width, adds
        # the lateral skip from encoder stage i, and refines with a residual block.
        self.up_proj = nn.ModuleList(
            [conv_bn_relu(ch[i + 1], ch[i], 1) for i in range(len(ch) - 1)]
        )
        self.decoder = nn.ModuleList(
            [Bottleneck(ch[i], ch[i], 1, ratio) for i in range(len(ch) - 1)]
        )
        self.heatmap_head = nn.Conv2d(ch[0], config.num_landmarks, 1)
        self.visibility_head = nn.Conv2d(ch[0], config.num_landmarks, 1)
        self.pose_ed_head = nn.Linear(ch[-1], 6)
        self.pose_ae_head = nn.Linear(ch[-1], 6)
        self.register_buffer("pose_mean", torch.zeros(6))
        self.register_buffer("pose_std", torch.ones(6))
        self._init_weights()

    def _init_weights(self) -> None:
        """He initialisation for ReLU nets; zero-init the last BN of each residual branch.

        Zeroing the residual branch makes every block start as identity, which keeps the deep
        paper configuration trainable from scratch without a pre-trained backbone.
        """
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        for module in self.modules():
            if isinstance(module, Bottleneck):
                nn.init.zeros_(module.body[-1].weight)
        for head in (self.pose_ed_head, self.pose_ae_head):
            nn.init.normal_(head.weight, std=0.01)
            nn.init.zeros_(head.bias)
        # Start every heatmap as a near-uniform distribution over the crop.
        nn.init.normal_(self.heatmap_head.weight, std=0.01)
        nn.init.zeros_(self.heatmap_head.bias)

    def set_pose_statistics(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Fix the standardisation of the pose heads from the training labels."""
        self.pose_mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        self.pose_std.copy_(torch.as_tensor(std, dtype=torch.float32).clamp_min(1e-6))

    def encode(self, image: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
        """Run the encoder only: skip features, p^ED and p^AE (the paper's fast head-pose mode)."""
        x = self.stem(image)
        skips = []
        for stage in self.encoder:
            x = stage(x)
            skips.append(x)
        embedding = torch.flatten(skips[-1], 1)
        pose_ed = self.pose_ed_head(embedding) * self.pose_std + self.pose_mean
        pose_ae = self.pose_ae_head(embedding) * self.pose_std + self.pose_mean
        return skips, pose_ed, pose_ae

    def forward(self, image: torch.Tensor) -> MNNOutput:
        """Full multi-task pass on a (N, 3, S, S) normalised crop batch."""
        skips, pose_ed, pose_ae = self.encode(image)
        x = skips[-1]
        for i in reversed(range(len(self.decoder))):
            x = nn.functional.interpolate(x, scale_factor=2.0, mode="nearest")
            x = self.decoder[i](self.up_proj[i](x) + skips[i])
        visibility = self.visibility_head(x).mean(dim=(2, 3))
        return MNNOutput(self.heatmap_head(x), pose_ed, pose_ae, visibility)

    def count_parameters(self) -> int:
        """Count the trainable weights, for the model card."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def flops_estimate(self) -> float:
        """Count multiply-accumulates of one forward pass (for choosing a config)."""
        macs = 0.0
        hooks = []

        def count(module: nn.Module, _inputs: Any, output: torch.Tensor) -> None:
            nonlocal macs
            if isinstance(module, nn.Conv2d):
                kernel = math.prod(module.kernel_size) * module.in_channels // module.groups
                macs += kernel * output.numel()
            elif isinstance(module, nn.Linear):
                macs += module.in_features * output.numel()

        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                hooks.append(module.register_forward_hook(count))
        was_training = self.training
        self.eval()
        with torch.no_grad():
            self(torch.zeros(1, 3, self.config.input_size, self.config.input_size))
        self.train(was_training)
        for hook in hooks:
            hook.remove()
        return macs
