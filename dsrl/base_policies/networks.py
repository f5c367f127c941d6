"""Denoiser networks with DPPO's module layout, so DPPO checkpoints load key for key.

Every network here predicts a tensor shaped like the action chunk from
``(x (B, chunk, action_dim), t (B,), cond (B, cond_steps * obs_dim))``. The
state-dict keys (``time_embedding.*``, ``cond_mlp.moduleList.*``,
``mlp_mean.layers.*`` or ``mlp_mean.moduleList.*``) are DPPO's; see
``shared/dppo_compat.md`` for the format.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Optional, Sequence

import torch
from torch import nn

ACTIVATIONS = {
    "ReLU": nn.ReLU,
    "ELU": nn.ELU,
    "GELU": nn.GELU,
    "Tanh": nn.Tanh,
    "Mish": nn.Mish,
    "Identity": nn.Identity,
    "Softplus": nn.Softplus,
}


def make_activation(name: str) -> nn.Module:
    """Return a fresh activation module by DPPO's name for it."""
    if name not in ACTIVATIONS:
        raise ValueError(f"activation_type={name!r} is not one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


class SinusoidalPosEmb(nn.Module):
    """Sinusoidal features of an integer diffusion step: (B,) -> (B, dim)."""

    def __init__(self, dim: int):
        super().__init__()
        half = dim // 2
        scale = math.log(10000) / (half - 1)
        self.register_buffer("freqs", torch.exp(torch.arange(half) * -scale), persistent=False)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        arg = t.float()[:, None] * self.freqs[None, :]
        return torch.cat((arg.sin(), arg.cos()), dim=-1)


class MLP(nn.Module):
    """Plain MLP, DPPO's ``MLP``: ``moduleList.i.linear_1`` (+ ``norm_1``) then the activation."""

    def __init__(
        self,
        dims: Sequence[int],
        activation_type: str = "Mish",
        out_activation_type: str = "Identity",
        use_layernorm: bool = False,
    ):
        super().__init__()
        self.moduleList = nn.ModuleList()
        last = len(dims) - 2
        for i, (d_in, d_out) in enumerate(zip(dims[:-1], dims[1:])):
            parts = [("linear_1", nn.Linear(d_in, d_out))]
            if i < last and use_layernorm:
                parts.append(("norm_1", nn.LayerNorm(d_out)))
            act = out_activation_type if i == last else activation_type
            parts.append(("act_1", make_activation(act)))
            self.moduleList.append(nn.Sequential(OrderedDict(parts)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.moduleList:
            x = layer(x)
        return x


class ResidualBlock(nn.Module):
    """DPPO's ``TwoLayerPreActivationResNetLinear``: ``x + l2(act(l1(act(x))))``."""

    def __init__(self, hidden_dim: int, activation_type: str, use_layernorm: bool):
        super().__init__()
        self.l1 = nn.Linear(hidden_dim, hidden_dim)
        self.l2 = nn.Linear(hidden_dim, hidden_dim)
        self.act = make_activation(activation_type)
        if use_layernorm:
            self.norm1 = nn.LayerNorm(hidden_dim, eps=1e-6)
            self.norm2 = nn.LayerNorm(hidden_dim, eps=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x) if hasattr(self, "norm1") else x
        h = self.l1(self.act(h))
        if hasattr(self, "norm2"):
            h = self.norm2(h)
        return x + self.l2(self.act(h))


class ResidualMLP(nn.Module):
    """DPPO's ``ResidualMLP``: Linear(in, h), one block per two hidden layers, Linear(h, out)."""

    def __init__(
        self,
        dims: Sequence[int],
        activation_type: str = "Mish",
        out_activation_type: str = "Identity",
        use_layernorm: bool = False,
    ):
        super().__init__()
        hidden = list(dims[1:-1])
        if len(set(hidden)) != 1 or (len(hidden) - 1) % 2 != 0:
            raise ValueError(
                f"residual_style needs mlp_dims of one width and odd length (1 + 2 per block), got {hidden}"
            )
        width = hidden[0]
        self.layers = nn.ModuleList([nn.Linear(dims[0], width)])
        self.layers.extend(ResidualBlock(width, activation_type, use_layernorm) for _ in range((len(hidden) - 1) // 2))
        self.layers.append(nn.Linear(width, dims[-1]))
        self.layers.append(make_activation(out_activation_type))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


class DenoiserMLP(nn.Module):
    """DPPO's ``DiffusionMLP``: predicts a chunk-shaped tensor from (noisy chunk, step, observation).

    The MLP input is ``[x flattened (chunk*action_dim), time embedding (time_dim),
    observation features]`` where the features are the flattened observation
    history, passed through ``cond_mlp`` when ``cond_mlp_dims`` is set. The same
    network serves the flow policy, whose ``t`` is a continuous time scaled to
    the step range.
    """

    def __init__(
        self,
        action_dim: int,
        horizon_steps: int,
        cond_dim: int,
        time_dim: int = 16,
        mlp_dims: Sequence[int] = (256, 256),
        cond_mlp_dims: Optional[Sequence[int]] = None,
        activation_type: str = "Mish",
        out_activation_type: str = "Identity",
        use_layernorm: bool = False,
        residual_style: bool = False,
    ):
        super().__init__()
        self.horizon_steps = horizon_steps
        self.action_dim = action_dim
        self.time_dim = time_dim
        self.time_embedding = nn.Sequential(
            SinusoidalPosEmb(time_dim),
            nn.Linear(time_dim, time_dim * 2),
            nn.Mish(),
            nn.Linear(time_dim * 2, time_dim),
        )
        self.feature_dim = cond_dim
        if cond_mlp_dims:
            self.cond_mlp = MLP([cond_dim, *cond_mlp_dims], activation_type=activation_type)
            self.feature_dim = cond_mlp_dims[-1]
        body = ResidualMLP if residual_style else MLP
        self.mlp_mean = body(
            [time_dim + action_dim * horizon_steps + self.feature_dim, *mlp_dims, action_dim * horizon_steps],
            activation_type=activation_type,
            out_activation_type=out_activation_type,
            use_layernorm=use_layernorm,
        )

    def encode_condition(self, cond: torch.Tensor) -> torch.Tensor:
        """Observation features fed to every denoising step: (B, cond_dim) -> (B, feature_dim)."""
        return self.cond_mlp(cond) if hasattr(self, "cond_mlp") else cond

    def forward_encoded(self, x: torch.Tensor, time_emb: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """Output for an embedded step (B, time_dim) and encoded features, both reusable across calls."""
        batch = x.shape[0]
        h = torch.cat([x.reshape(batch, -1), time_emb, features], dim=-1)
        return self.mlp_mean(h).view(batch, self.horizon_steps, self.action_dim)

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return self.forward_encoded(x, self.time_embedding(t), self.encode_condition(cond))
