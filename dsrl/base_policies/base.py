"""The ``NoisePolicy`` interface: a frozen map from (observation, initial noise) to an action chunk.

Shapes and units, used everywhere in the package:

- ``obs``: (B, cond_dim) with ``cond_dim = cond_steps * obs_dim``, the
  observation history (oldest first) normalised to [-1, 1].
- ``noise``: (B, noise_steps, action_dim), the initial noise the sampler
  starts from; ``noise_steps`` is the chunk except for samplers that denoise a
  longer horizon than they return (LeRobot's).
- returned action chunk: (B, chunk, action_dim), normalised actions in [-1, 1].

The sampler is deterministic: the same (obs, noise) always gives the same
chunk, which is what lets DSRL steer the policy through its noise.

Sampling runs in two parts: :meth:`NoisePolicy.encode` turns ``obs`` into the
conditioning features (B, feature_dim) every denoising step reuses (the
observation encoder's output: identity, ``cond_mlp`` or image features), and
:meth:`NoisePolicy.sample_from_features` denoises from them.
:class:`PolicyEmbeddingView` is the same policy taking the features as its
observation, for agents that observe the policy's embedding.
"""

from __future__ import annotations

import abc

import torch
from torch import nn

from dsrl.base_policies.networks import DenoiserMLP


class NoisePolicy(nn.Module, abc.ABC):
    """Base class of noise-controllable generative policies.

    Calling the policy samples without gradients; :meth:`loss` is the
    behaviour-cloning objective used to pretrain it.

    :param network: denoiser predicting a chunk-shaped tensor (DPPO layout)
    :param obs_dim: dimension of one observation
    :param cond_steps: number of stacked observations the policy conditions on
    :param final_action_clip_value: clip sampled actions to this magnitude (None: no clip)
    """

    def __init__(
        self,
        network: DenoiserMLP,
        obs_dim: int,
        cond_steps: int = 1,
        final_action_clip_value: float | None = None,
    ):
        super().__init__()
        self.network = network
        self.obs_dim = obs_dim
        self.cond_steps = cond_steps
        self.final_action_clip_value = final_action_clip_value

    @property
    def chunk(self) -> int:
        return self.network.horizon_steps

    @property
    def action_dim(self) -> int:
        return self.network.action_dim

    graph_capturable: bool = True
    """Whether sampling can run inside a CUDA graph (no host round trips, no tensors made from host data)."""

    @property
    def noise_steps(self) -> int:
        """Steps of the initial noise (B, noise_steps, action_dim): the chunk, unless the sampler denoises
        a longer horizon and returns only ``chunk`` steps of it (LeRobot's ``horizon`` vs ``n_action_steps``)."""
        return self.chunk

    @property
    def cond_dim(self) -> int:
        return self.obs_dim * self.cond_steps

    @property
    def feature_dim(self) -> int:
        """Size of the conditioning features :meth:`encode` returns."""
        return self.network.feature_dim

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def freeze(self) -> "NoisePolicy":
        """Put the policy in evaluation mode with no trainable parameters; returns self."""
        self.eval()
        self.requires_grad_(False)
        return self

    def check_shapes(self, obs: torch.Tensor, noise: torch.Tensor) -> None:
        """Raise a ValueError naming both shapes when (obs, noise) do not fit this policy."""
        if obs.ndim != 2 or obs.shape[1] != self.cond_dim:
            raise ValueError(f"obs has shape {tuple(obs.shape)}, expected (B, {self.cond_dim})")
        expected = (obs.shape[0], self.noise_steps, self.action_dim)
        if tuple(noise.shape) != expected:
            raise ValueError(f"noise has shape {tuple(noise.shape)}, expected {expected}")

    @torch.no_grad()
    def forward(self, obs: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Sample the action chunk (B, chunk, action_dim) that ``noise`` maps to under ``obs``."""
        self.check_shapes(obs, noise)
        actions = self.sample(obs, noise)
        if self.final_action_clip_value is not None:
            actions = actions.clamp(-self.final_action_clip_value, self.final_action_clip_value)
        return actions

    def encode(self, obs: torch.Tensor) -> torch.Tensor:
        """Conditioning features (B, feature_dim) of ``obs`` (B, cond_dim), as the denoiser uses them."""
        return self.network.encode_condition(obs)

    def sample(self, obs: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Run the sampler from ``noise``; shapes as in :meth:`forward`, no shape checks."""
        return self.sample_from_features(self.encode(obs), noise)

    @abc.abstractmethod
    def sample_from_features(self, features: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Run the sampler from ``noise`` (B, chunk, action_dim) under encoded features (B, feature_dim)."""

    @abc.abstractmethod
    def loss(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Behaviour-cloning loss (scalar) for normalised (obs (B, cond_dim), actions (B, chunk, action_dim))."""


class PolicyEmbeddingView(NoisePolicy):
    """A frozen policy whose observation is its own embedding (:meth:`NoisePolicy.encode`'s output).

    ``view(policy.encode(obs), noise) == policy(obs, noise)``; the features are
    computed once per step (by :class:`~dsrl.envs.embedding_env.PolicyEmbeddingObservation`)
    and reused for the agent's input and every denoising pass.

    :param policy: the base policy; shares its network and sampler
    """

    def __init__(self, policy: NoisePolicy):
        super().__init__(policy.network, policy.feature_dim, 1, policy.final_action_clip_value)
        self.policy = policy

    @property
    def noise_steps(self) -> int:
        return self.policy.noise_steps

    @property
    def graph_capturable(self) -> bool:
        return self.policy.graph_capturable

    def encode(self, obs: torch.Tensor) -> torch.Tensor:
        return obs

    def sample_from_features(self, features: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return self.policy.sample_from_features(features, noise)

    def loss(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        raise TypeError("PolicyEmbeddingView only samples; train the base policy itself")
