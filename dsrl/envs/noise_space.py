"""The noise action space DSRL's agents act in, and its expansion to the base policy's noise."""

from __future__ import annotations

import math

import numpy as np
import torch
from gymnasium import spaces
from torch import nn

EXPANSIONS = ("tile", "projection")


class NoiseBox(spaces.Box):
    """``Box(±action_magnitude)`` whose ``sample()`` is the base policy's own noise.

    Samples are standard normal draws clipped to the bounds, so SB3's warm-up
    (``learning_starts``), which samples the action space, rolls out the base
    policy rather than uniform noise.
    """

    def __init__(self, magnitude: float, dim: int, seed: int | None = None):
        if magnitude <= 0:
            raise ValueError(f"action_magnitude={magnitude} must be > 0")
        super().__init__(-magnitude, magnitude, (dim,), np.float32, seed=seed)
        self.magnitude = float(magnitude)

    def sample(self, mask=None, probability=None) -> np.ndarray:
        draw = self.np_random.standard_normal(self.shape)
        return np.clip(draw, -self.magnitude, self.magnitude).astype(np.float32)


class NoiseExpansion(nn.Module):
    """Maps the agent's noise action (B, noise_dim) to the base policy's noise (B, noise_steps, action_dim).

    With ``noise_action_dim`` <= 0 the agent acts in the full noise
    (noise_dim = noise_steps * action_dim) and the map only reshapes. Otherwise the
    agent acts in k = ``noise_action_dim`` numbers (low-dimensional steering):

    - ``tile``: the k numbers repeated until noise_steps * action_dim and cut there
      (the fork's ``desired_action_dim``); values, bounds and N(0, 1)
      marginals are unchanged;
    - ``projection``: a fixed random matrix (seed ``projection_seed``) with
      unit-norm rows, so N(0, I_k) maps to N(0, 1) marginals; the result is
      clamped to ±``magnitude``, the bound of the full noise space.

    :param noise_steps: steps of the base policy's noise (its chunk, or the longer horizon it denoises)
    :param action_dim: the base policy's action dimension
    :param noise_action_dim: k; <= 0 for the full noise
    :param kind: ``tile`` or ``projection``
    :param magnitude: bound of the noise (the agent's ``action_magnitude``)
    :param projection_seed: seed of the projection matrix (fixed, so a saved agent reloads with the same map)
    """

    def __init__(
        self,
        noise_steps: int,
        action_dim: int,
        noise_action_dim: int = 0,
        kind: str = "tile",
        magnitude: float = math.inf,
        projection_seed: int = 0,
    ):
        super().__init__()
        full = noise_steps * action_dim
        if kind not in EXPANSIONS:
            raise ValueError(f"noise_expansion={kind!r} is not one of {EXPANSIONS}")
        if noise_action_dim > full:
            raise ValueError(
                f"noise_action_dim={noise_action_dim} is larger than the base policy's noise "
                f"(noise_steps {noise_steps} x action_dim {action_dim} = {full}); "
                f"use at most {full}, or <= 0 for the full noise"
            )
        self.noise_steps, self.action_dim, self.kind, self.magnitude = noise_steps, action_dim, kind, magnitude
        self.noise_dim = noise_action_dim if noise_action_dim > 0 else full
        self.full = self.noise_dim == full
        projection = torch.randn(full, self.noise_dim, generator=torch.Generator().manual_seed(projection_seed))
        self.register_buffer("projection", projection / projection.norm(dim=1, keepdim=True), persistent=False)

    def forward(self, noise: torch.Tensor) -> torch.Tensor:
        """The base policy's noise (B, noise_steps, action_dim) for the agent's (B, noise_dim)."""
        if noise.ndim != 2 or noise.shape[1] != self.noise_dim:
            raise ValueError(f"noise action has shape {tuple(noise.shape)}, expected (B, {self.noise_dim})")
        if self.full:
            expanded = noise
        elif self.kind == "tile":
            repeats = math.ceil(self.noise_steps * self.action_dim / self.noise_dim)
            expanded = noise.repeat(1, repeats)[:, : self.noise_steps * self.action_dim]
        else:
            expanded = (noise @ self.projection.T).clamp(-self.magnitude, self.magnitude)
        return expanded.reshape(-1, self.noise_steps, self.action_dim)
