"""Actor and critic networks for DSRL's SAC agents (the authors' LayerNorm MLPs).

Both follow SB3's interfaces (:class:`~stable_baselines3.sac.policies.Actor`,
:class:`~stable_baselines3.common.policies.ContinuousCritic`), so SB3's SAC
trains them unchanged. Hidden layers are ``Linear -> LayerNorm -> activation``
when ``layer_norm`` is set.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from gymnasium import spaces
from stable_baselines3.common.policies import BaseModel
from stable_baselines3.common.preprocessing import get_action_dim
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor, create_mlp
from stable_baselines3.sac.policies import Actor
from torch import nn


class FullPrecisionLinear(nn.Linear):
    """A Linear layer computed in float32 under autocast too (an output layer whose values feed log-probabilities
    or TD errors, which bfloat16's 8-bit mantissa would swamp)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):
            return super().forward(x.float())


def in_full_precision(head: nn.Linear) -> FullPrecisionLinear:
    """``head`` as a :class:`FullPrecisionLinear` with the same parameters (no random draws: seeded runs keep
    their initialisation)."""
    full = nn.utils.skip_init(FullPrecisionLinear, head.in_features, head.out_features, device=head.weight.device)
    full.load_state_dict(head.state_dict())
    return full


class LayerNormActor(Actor):
    """SB3's squashed-Gaussian SAC actor with LayerNorm after each hidden Linear; its mean and log-std output
    layers compute in float32 under autocast too (:class:`FullPrecisionLinear`).

    :param layer_norm: insert LayerNorm after each hidden Linear layer
    :param zero_init: start the mean and log-std output layers at zero, so that in every state the untrained
        actor's mean action is 0 and its samples are tanh(N(0, I)) (SB3's random initialisation puts the mean of a
        fresh actor at a random, state-dependent point: its absolute value averages about 0.27 per dimension of
        the squashed [-1, 1] action, at width 256 as at 2048)
    (other parameters: SB3's :class:`Actor`)
    """

    def __init__(self, *args, layer_norm: bool = True, zero_init: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.layer_norm = layer_norm
        self.zero_init = zero_init
        if layer_norm:
            self.latent_pi = nn.Sequential(
                *create_mlp(
                    self.features_dim, -1, self.net_arch, self.activation_fn, post_linear_modules=[nn.LayerNorm]
                )
            )
        if not self.use_sde:
            self.mu, self.log_std = in_full_precision(self.mu), in_full_precision(self.log_std)
        if zero_init:
            if self.use_sde:
                raise ValueError("zero_init needs the plain Gaussian actor (use_sde=False)")
            for head in (self.mu, self.log_std):
                nn.init.zeros_(head.weight)
                nn.init.zeros_(head.bias)

    def _get_constructor_parameters(self) -> dict:
        return dict(super()._get_constructor_parameters(), layer_norm=self.layer_norm, zero_init=self.zero_init)


class EnsembleLinear(nn.Module):
    """``n`` independent Linear layers applied as one batched matmul: (n, B, in) -> (n, B, out).

    :param full_precision: compute in float32 under autocast too (a critic's output layer: the TD error is a
        small difference of two values, which bfloat16's 8-bit mantissa would swamp)
    """

    def __init__(self, n: int, in_features: int, out_features: int, full_precision: bool = False):
        super().__init__()
        bound = 1.0 / math.sqrt(in_features)
        self.weight = nn.Parameter(torch.empty(n, in_features, out_features).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(n, 1, out_features).uniform_(-bound, bound))
        self.full_precision = full_precision

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.full_precision:
            return torch.baddbmm(self.bias, x, self.weight)
        with torch.autocast(x.device.type, enabled=False):
            return torch.baddbmm(self.bias, x.float(), self.weight)


class EnsembleLayerNorm(nn.Module):
    """LayerNorm over the last dimension with separate affine parameters per ensemble member."""

    def __init__(self, n: int, features: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(n, 1, features))
        self.bias = nn.Parameter(torch.zeros(n, 1, features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, x.shape[-1:], eps=self.eps) * self.weight + self.bias


class EnsembleCritic(BaseModel):
    """``n_critics`` Q-networks Q(s, a) evaluated as one batched network.

    Same interface as SB3's ``ContinuousCritic``: ``forward`` returns a tuple of
    ``n_critics`` tensors (B, 1); the weights of all members are stacked so a
    forward pass is one batched matmul per layer.

    :param observation_space: observation space
    :param action_space: space of the actions the critic scores
    :param net_arch: hidden layer widths
    :param features_extractor: SB3 features extractor of the observations
    :param features_dim: its output size
    :param activation_fn: hidden activation
    :param normalize_images: SB3's image normalisation flag
    :param n_critics: ensemble size
    :param share_features_extractor: whether the extractor is the actor's (then not trained here)
    :param layer_norm: LayerNorm after each hidden Linear

    ``subset_size`` (attribute, 0 on construction): when > 0, ``forward`` and
    ``all_q`` return only that many members, drawn at random (without
    replacement) on every call: REDQ's in-target subset, set on a target critic.
    """

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Box,
        net_arch: list[int],
        features_extractor: BaseFeaturesExtractor,
        features_dim: int,
        activation_fn: type[nn.Module] = nn.ReLU,
        normalize_images: bool = True,
        n_critics: int = 2,
        share_features_extractor: bool = True,
        layer_norm: bool = True,
    ):
        super().__init__(
            observation_space, action_space, features_extractor=features_extractor, normalize_images=normalize_images
        )
        self.subset_size = 0
        self.share_features_extractor = share_features_extractor
        self.n_critics = n_critics
        layers: list[nn.Module] = []
        widths = [features_dim + get_action_dim(action_space), *net_arch]
        for d_in, d_out in zip(widths[:-1], widths[1:]):
            layers.append(EnsembleLinear(n_critics, d_in, d_out))
            if layer_norm:
                layers.append(EnsembleLayerNorm(n_critics, d_out))
            layers.append(activation_fn())
        layers.append(EnsembleLinear(n_critics, widths[-1], 1, full_precision=True))
        self.q_net = nn.Sequential(*layers)

    def forward(self, obs: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self.all_q(obs, actions).unbind(0))

    def all_q(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """The members' values stacked: (n_critics, B, 1), or (subset_size, B, 1) of a random subset."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.share_features_extractor):
            features = self.extract_features(obs, self.features_extractor)
        x = torch.cat([features, actions], dim=1)
        values = self.q_net(x.unsqueeze(0).expand(self.n_critics, -1, -1))
        if not self.subset_size:
            return values
        members = torch.rand(self.n_critics, device=values.device).argsort()[: self.subset_size]
        return values.index_select(0, members)

    def q1_forward(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        return self.forward(obs, actions)[0]
