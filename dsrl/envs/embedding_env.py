"""Agents that observe the base policy's embedding instead of the raw observation."""

from __future__ import annotations

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper
from stable_baselines3.common.vec_env.base_vec_env import VecEnvStepReturn

from dsrl.base_policies.base import NoisePolicy

ENCODE_BATCH = 4096
"""Observations encoded per forward pass when converting stored data."""


@torch.no_grad()
def embed(policy: NoisePolicy, obs: np.ndarray) -> np.ndarray:
    """The policy's conditioning features (N, feature_dim) of observations (N, cond_dim), as float32."""
    tensor = torch.as_tensor(np.asarray(obs, dtype=np.float32), device=policy.device)
    features = [policy.encode(part) for part in tensor.split(ENCODE_BATCH)]
    return torch.cat(features).cpu().numpy() if features else np.zeros((0, policy.feature_dim), np.float32)


class PolicyEmbeddingObservation(VecEnvWrapper):
    """A VecEnv whose observations are the base policy's conditioning features.

    Each step's observations (n_envs, cond_dim) are encoded once by
    ``policy.encode`` into (n_envs, feature_dim); the agent and the denoising
    (through :class:`~dsrl.base_policies.base.PolicyEmbeddingView`) both use
    them. ``info["terminal_observation"]`` is encoded in the same pass, so SAC
    bootstraps truncated episodes from the same representation.

    :param venv: VecEnv whose observations are what ``policy`` conditions on
    :param policy: the frozen base policy
    """

    def __init__(self, venv: VecEnv, policy: NoisePolicy):
        if venv.observation_space.shape != (policy.cond_dim,):
            raise ValueError(
                f"env observation shape {venv.observation_space.shape} does not match the base policy's "
                f"cond_dim {policy.cond_dim}"
            )
        space = spaces.Box(-np.inf, np.inf, (policy.feature_dim,), np.float32)
        super().__init__(venv, observation_space=space)
        self.policy = policy

    def reset(self) -> np.ndarray:
        return embed(self.policy, self.venv.reset())

    def step_wait(self) -> VecEnvStepReturn:
        obs, rewards, dones, infos = self.venv.step_wait()
        ended = [info for info in infos if "terminal_observation" in info]
        features = embed(self.policy, np.concatenate([obs, *(info["terminal_observation"][None] for info in ended)]))
        for info, terminal_features in zip(ended, features[len(obs) :]):
            info["terminal_observation"] = terminal_features
        return features[: len(obs)], rewards, dones, infos
