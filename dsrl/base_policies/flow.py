"""Flow-matching policy: Euler integration of a learned velocity field from the caller's noise.

Convention (rectified flow): ``x_τ = (1 - τ) noise + τ action`` for τ in [0, 1],
velocity target ``action - noise``; sampling integrates from τ = 0 (the
noise) to τ = 1 (the action) in ``flow_steps`` equal Euler steps.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from dsrl.base_policies.base import NoisePolicy
from dsrl.base_policies.networks import DenoiserMLP


class FlowPolicy(NoisePolicy):
    """Flow-matching MLP policy, deterministic given the initial noise.

    :param network: velocity predictor (same layout as the diffusion denoiser)
    :param obs_dim: dimension of one observation
    :param cond_steps: number of stacked observations
    :param flow_steps: Euler steps from noise to action
    :param time_scale: τ is multiplied by this before the sinusoidal time embedding
    :param final_action_clip_value: clamp of the sampled actions (None: none)
    """

    def __init__(
        self,
        network: DenoiserMLP,
        obs_dim: int,
        cond_steps: int = 1,
        flow_steps: int = 10,
        time_scale: float = 1000.0,
        final_action_clip_value: float | None = 1.0,
    ):
        super().__init__(network, obs_dim, cond_steps, final_action_clip_value)
        if flow_steps < 1:
            raise ValueError(f"flow_steps={flow_steps} must be >= 1")
        self.flow_steps = flow_steps
        self.time_scale = time_scale
        self.register_buffer("taus", torch.arange(flow_steps) / flow_steps, persistent=False)

    def sample_from_features(self, features: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        net = self.network
        batch = features.shape[0]
        time_embs = net.time_embedding(self.taus * self.time_scale)
        dt = 1.0 / self.flow_steps
        x = noise
        for i in range(self.flow_steps):
            x = x + dt * net.forward_encoded(x, time_embs[i].expand(batch, -1), features)
        return x

    def loss(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        noise = torch.randn_like(actions)
        tau = torch.rand(actions.shape[0], device=actions.device)
        x = (1.0 - tau.view(-1, 1, 1)) * noise + tau.view(-1, 1, 1) * actions
        return F.mse_loss(self.network(x, tau * self.time_scale, obs), actions - noise)
