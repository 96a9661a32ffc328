"""A small 2D U-Net for short-axis cine CMR segmentation (4 classes: bg, RV, myo, LV).

Five resolution levels (four 2x poolings), two 3x3 conv + BatchNorm + LeakyReLU per level, transposed
convolutions for upsampling, skip connections by concatenation. With ``base=16`` it has about 1.9 M
parameters (weights are stored as float16: about 3.7 MB). Input height and width must be multiples of 16.
"""

from __future__ import annotations

import torch
from torch import nn

N_CLASSES = 4


class _Block(nn.Sequential):
    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__(
            nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.LeakyReLU(0.01, inplace=True),
            nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.LeakyReLU(0.01, inplace=True),
        )


class UNet2D(nn.Module):
    """Plain 2D U-Net. ``forward`` returns logits (B, n_classes, H, W)."""

    def __init__(
        self,
        in_channels: int = 1,
        n_classes: int = N_CLASSES,
        base: int = 16,
        depth: int = 4,
    ) -> None:
        super().__init__()
        self.config = {
            "in_channels": in_channels,
            "n_classes": n_classes,
            "base": base,
            "depth": depth,
        }
        chans = [base * 2**i for i in range(depth + 1)]
        self.down = nn.ModuleList()
        c_prev = in_channels
        for c in chans:
            self.down.append(_Block(c_prev, c))
            c_prev = c
        self.pool = nn.MaxPool2d(2)
        self.up = nn.ModuleList()
        self.dec = nn.ModuleList()
        for i in range(depth, 0, -1):
            self.up.append(nn.ConvTranspose2d(chans[i], chans[i - 1], 2, stride=2))
            self.dec.append(_Block(chans[i - 1] * 2, chans[i - 1]))
        self.head = nn.Conv2d(chans[0], n_classes, 1)

    @property
    def multiple(self) -> int:
        return 2 ** self.config["depth"]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, block in enumerate(self.down):
            x = block(x)
            if i < len(self.down) - 1:
                skips.append(x)
                x = self.pool(x)
        for up, dec in zip(self.up, self.dec):
            x = up(x)
            x = dec(torch.cat([x, skips.pop()], dim=1))
        return self.head(x)


def count_parameters(model: nn.Module) -> int:
    return int(sum(p.numel() for p in model.parameters()))
