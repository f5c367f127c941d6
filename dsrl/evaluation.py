"""Evaluation of agents and of base policies alone on chunked VecEnvs."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.vec_env import VecEnv

from dsrl.base_policies.base import NoisePolicy


class BasePolicyAgent:
    """The base policy alone, as an agent with SB3's ``predict``: noise ~ N(0, I) clipped at ±``noise_clip``.

    :param policy: frozen noise policy
    :param noise_clip: clip of the Gaussian draws (DPPO's ``randn_clip_value``)
    :param seed: seed of the noise draws
    """

    def __init__(self, policy: NoisePolicy, noise_clip: float = 3.0, seed: int = 0):
        self.policy = policy
        self.noise_clip = noise_clip
        self.generator = torch.Generator(device=policy.device).manual_seed(seed)

    def predict(self, observation: np.ndarray, state=None, episode_start=None, deterministic: bool = False):
        policy = self.policy
        obs = torch.as_tensor(observation, dtype=torch.float32, device=policy.device)
        noise = torch.randn(
            len(obs), policy.chunk, policy.action_dim, generator=self.generator, device=policy.device
        ).clamp(-self.noise_clip, self.noise_clip)
        return policy(obs, noise).reshape(len(obs), -1).cpu().numpy(), state


def evaluate(agent: Any, env: VecEnv, n_episodes: int, deterministic: bool, seed: int) -> dict[str, float]:
    """Success rate and return over ``n_episodes`` episodes of ``env`` reseeded with ``seed``.

    ``agent`` is anything with SB3's ``predict`` whose actions ``env`` takes.
    """
    env.seed(seed)
    successes: list[bool] = []

    def record_success(local_vars: dict[str, Any], _globals: dict[str, Any]) -> None:
        if local_vars["done"]:
            successes.append(bool(local_vars["info"].get("is_success", False)))

    returns, _ = evaluate_policy(
        agent,
        env,
        n_eval_episodes=n_episodes,
        deterministic=deterministic,
        callback=record_success,
        return_episode_rewards=True,
    )
    return {
        "success_rate": float(np.mean(successes[:n_episodes])),
        "return_mean": float(np.mean(returns)),
        "return_std": float(np.std(returns)),
    }
