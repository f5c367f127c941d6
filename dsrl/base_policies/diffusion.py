"""DPPO's diffusion policy: epsilon prediction, cosine schedule, DDIM (eta = 0) from the caller's noise."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from dsrl.base_policies.base import NoisePolicy
from dsrl.base_policies.networks import DenoiserMLP


def cosine_alphas_cumprod(denoising_steps: int, s: float = 0.008) -> torch.Tensor:
    """ᾱ_t for t = 0..T-1 of the cosine schedule, computed as DPPO does (float64, then float32 cumprod)."""
    steps = denoising_steps + 1
    x = np.linspace(0, steps, steps)
    alphas_bar = np.cos(((x / steps) + s) / (1 + s) * np.pi * 0.5) ** 2
    alphas_bar = alphas_bar / alphas_bar[0]
    betas = np.clip(1 - (alphas_bar[1:] / alphas_bar[:-1]), 0, 0.999)
    return torch.cumprod(1.0 - torch.tensor(betas, dtype=torch.float32), dim=0)


class DiffusionPolicy(NoisePolicy):
    """Diffusion MLP policy sampled with DDIM from the given initial noise.

    :param network: epsilon predictor (DPPO ``DiffusionMLP`` layout)
    :param obs_dim: dimension of one observation
    :param cond_steps: number of stacked observations
    :param denoising_steps: T of the training schedule
    :param ddim_steps: number of DDIM steps at sampling ("leading" spacing T // ddim_steps)
    :param denoised_clip_value: clamp of the predicted x0 at each step (epsilon is recomputed from it)
    :param final_action_clip_value: clamp of the sampled actions (None: none)
    """

    def __init__(
        self,
        network: DenoiserMLP,
        obs_dim: int,
        cond_steps: int = 1,
        denoising_steps: int = 20,
        ddim_steps: int = 5,
        denoised_clip_value: float = 1.0,
        final_action_clip_value: float | None = None,
    ):
        super().__init__(network, obs_dim, cond_steps, final_action_clip_value)
        if not 1 <= ddim_steps <= denoising_steps:
            raise ValueError(f"ddim_steps={ddim_steps} must be in [1, denoising_steps={denoising_steps}]")
        self.denoising_steps = denoising_steps
        self.ddim_steps = ddim_steps
        self.denoised_clip_value = denoised_clip_value
        alphas_bar = cosine_alphas_cumprod(denoising_steps)
        ddim_t = torch.arange(ddim_steps) * (denoising_steps // ddim_steps)
        alpha = alphas_bar[ddim_t]
        alpha_prev = torch.cat([torch.ones(1), alpha[:-1]])
        self.register_buffer("alphas_bar", alphas_bar, persistent=False)
        self.register_buffer("ddim_t", ddim_t.flip(0), persistent=False)
        self.register_buffer("ddim_alpha", alpha.flip(0), persistent=False)
        self.register_buffer("ddim_alpha_prev", alpha_prev.flip(0), persistent=False)

    def sample_from_features(self, features: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        net = self.network
        batch = features.shape[0]
        time_embs = net.time_embedding(self.ddim_t)
        sqrt_alpha, sqrt_one_minus = self.ddim_alpha.sqrt(), (1.0 - self.ddim_alpha).sqrt()
        sqrt_alpha_prev, sqrt_one_minus_prev = self.ddim_alpha_prev.sqrt(), (1.0 - self.ddim_alpha_prev).sqrt()
        clip = self.denoised_clip_value
        x = noise
        for i in range(self.ddim_steps):
            eps = net.forward_encoded(x, time_embs[i].expand(batch, -1), features)
            x0 = (x - sqrt_one_minus[i] * eps) / sqrt_alpha[i]
            if clip is not None:
                x0 = x0.clamp(-clip, clip)
                eps = (x - sqrt_alpha[i] * x0) / sqrt_one_minus[i]
            x = sqrt_alpha_prev[i] * x0 + sqrt_one_minus_prev[i] * eps
        return x

    def loss(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        t = torch.randint(0, self.denoising_steps, (actions.shape[0],), device=actions.device)
        eps = torch.randn_like(actions)
        alpha = self.alphas_bar[t].view(-1, 1, 1)
        noisy = alpha.sqrt() * actions + (1.0 - alpha).sqrt() * eps
        return F.mse_loss(self.network(noisy, t, obs), eps)
