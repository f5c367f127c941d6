"""Image-conditioned denoisers: a small ResNet-style image encoder in front of DPPO's denoiser MLP.

An image policy's observation is flat, like every observation in the package:
``[pixels (C * H * W, channels first, normalised to [-1, 1]), state (state_dim)]``
per observation step (see :mod:`dsrl.envs.pusht`). The encoder splits it,
encodes each image to ``feature_dim`` numbers and concatenates the state, so
the features the denoiser conditions on are (B, cond_steps * (feature_dim + state_dim)).
Written in plain torch (torchvision does not load with the CPU torch build).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from dsrl.base_policies.networks import DenoiserMLP

POOLS = ("spatial_softmax", "average")


def group_norm(channels: int, groups: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(groups, channels), channels)


class BasicBlock(nn.Module):
    """ResNet's basic block with GroupNorm: two 3x3 convolutions and a (projected) shortcut."""

    def __init__(self, c_in: int, c_out: int, stride: int, groups: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.norm1 = group_norm(c_out, groups)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.norm2 = group_norm(c_out, groups)
        self.shortcut = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), group_norm(c_out, groups))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.norm1(self.conv1(x)))
        return F.relu(self.norm2(self.conv2(h)) + self.shortcut(x))


class SpatialSoftmax(nn.Module):
    """(N, C, H, W) -> (N, 2C): the expected (x, y) in [-1, 1] of each channel's softmax over positions."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        weights = x.flatten(2).softmax(dim=-1).view(n, c, h, w)
        ys = torch.linspace(-1, 1, h, device=x.device)
        xs = torch.linspace(-1, 1, w, device=x.device)
        return torch.cat([(weights.sum(2) * xs).sum(-1), (weights.sum(3) * ys).sum(-1)], dim=-1)


class ImageEncoder(nn.Module):
    """ResNet-18-style image encoder: crop, stem, stages of basic blocks, pooling, linear features.

    Training mode takes a random ``crop_size`` crop of each image (augmentation);
    evaluation mode the centre crop.

    :param image_shape: (C, H, W) of the input images
    :param channels: width of each stage (the stem has the first); every stage after the first halves the resolution
    :param blocks_per_stage: basic blocks per stage (ResNet-18 has 2)
    :param pool: ``spatial_softmax`` (keypoints, 2 per channel) or ``average`` (global average pooling)
    :param feature_dim: output size
    :param crop_size: side of the square crop (at most min(H, W))
    :param groups: GroupNorm groups
    """

    def __init__(
        self,
        image_shape: Sequence[int],
        channels: Sequence[int] = (16, 32, 64, 128),
        blocks_per_stage: int = 1,
        pool: str = "spatial_softmax",
        feature_dim: int = 64,
        crop_size: int = 84,
        groups: int = 8,
    ):
        super().__init__()
        c, h, w = image_shape
        if pool not in POOLS:
            raise ValueError(f"image_encoder.pool={pool!r} is not one of {POOLS}")
        if not 8 <= crop_size <= min(h, w):
            raise ValueError(f"image_encoder.crop_size={crop_size} must be in [8, {min(h, w)}] for images {h}x{w}")
        self.crop_size = crop_size
        layers: list[nn.Module] = [
            nn.Conv2d(c, channels[0], 3, 2, 1, bias=False),
            group_norm(channels[0], groups),
            nn.ReLU(),
        ]
        width = channels[0]
        for stage, c_out in enumerate(channels):
            for block in range(blocks_per_stage):
                stride = 2 if stage > 0 and block == 0 else 1
                layers.append(BasicBlock(width, c_out, stride, groups))
                width = c_out
        self.backbone = nn.Sequential(*layers)
        self.pool = SpatialSoftmax() if pool == "spatial_softmax" else nn.AdaptiveAvgPool2d(1)
        self.out = nn.Linear(2 * width if pool == "spatial_softmax" else width, feature_dim)
        self.feature_dim = feature_dim

    def crop(self, images: torch.Tensor) -> torch.Tensor:
        n, _, h, w = images.shape
        size = self.crop_size
        if not self.training:
            top, left = (h - size) // 2, (w - size) // 2
            return images[:, :, top : top + size, left : left + size]
        top = torch.randint(0, h - size + 1, (n, 1), device=images.device)
        left = torch.randint(0, w - size + 1, (n, 1), device=images.device)
        offsets = torch.arange(size, device=images.device)
        rows, cols = (top + offsets)[:, :, None], (left + offsets)[:, None, :]
        return images[torch.arange(n, device=images.device)[:, None, None], :, rows, cols].permute(0, 3, 1, 2)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) images in [-1, 1] -> (N, feature_dim)."""
        return self.out(self.pool(self.backbone(self.crop(images))).flatten(1))


class ImageDenoiserMLP(DenoiserMLP):
    """DPPO's denoiser MLP conditioned on :class:`ImageEncoder` features and the state.

    :param image_shape: (C, H, W) of the image part of each observation
    :param obs_dim: size of one flat observation (C * H * W pixels, then the state)
    :param cond_steps: observation steps conditioned on
    :param image_encoder: :class:`ImageEncoder` keyword arguments
    (other parameters: :class:`~dsrl.base_policies.networks.DenoiserMLP`; its
    ``cond_dim`` is cond_steps * (feature_dim + state_dim))
    """

    def __init__(
        self,
        image_shape: Sequence[int],
        obs_dim: int,
        cond_steps: int,
        action_dim: int,
        horizon_steps: int,
        image_encoder: dict[str, Any] | None = None,
        **kwargs: Any,
    ):
        pixels = math.prod(image_shape)
        if obs_dim < pixels:
            raise ValueError(
                f"base_policy.obs_dim={obs_dim} is smaller than base_policy.image_shape {list(image_shape)} "
                f"({pixels} pixels): an image policy needs image observations (e.g. pusht obs_type=pixels_agent_pos)"
            )
        encoder = ImageEncoder(image_shape, **(image_encoder or {}))
        state_dim = obs_dim - pixels
        super().__init__(action_dim, horizon_steps, cond_steps * (encoder.feature_dim + state_dim), **kwargs)
        self.image_encoder = encoder
        self.image_shape, self.pixels, self.cond_steps = tuple(image_shape), pixels, cond_steps

    def encode_condition(self, cond: torch.Tensor) -> torch.Tensor:
        """(B, cond_steps * obs_dim) flat observations -> (B, cond_steps * (feature_dim + state_dim))."""
        batch = cond.shape[0]
        steps = cond.reshape(batch * self.cond_steps, -1)
        images = steps[:, : self.pixels].reshape(-1, *self.image_shape)
        features = torch.cat([self.image_encoder(images), steps[:, self.pixels :]], dim=-1)
        return super().encode_condition(features.reshape(batch, -1))
