"""Evaluation of agents and of base policies alone on chunked VecEnvs."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.vec_env import VecEnv

from dsrl.base_policies.base import NoisePolicy


class NoiseAgent:
    """The base policy driven by a fixed rule for its noise, as an agent with SB3's ``predict``."""

    def __init__(self, policy: NoisePolicy):
        self.policy = policy

    def noise(self, batch: int) -> torch.Tensor:
        """Noise (batch, chunk, action_dim) on the policy's device."""
        raise NotImplementedError

    def predict(self, observation: np.ndarray, state=None, episode_start=None, deterministic: bool = False):
        obs = torch.as_tensor(observation, dtype=torch.float32, device=self.policy.device)
        return self.policy(obs, self.noise(len(obs))).reshape(len(obs), -1).cpu().numpy(), state


class BasePolicyAgent(NoiseAgent):
    """The base policy alone: noise ~ N(0, I) clipped at ±``noise_clip`` (DPPO's ``randn_clip_value``).

    With ``scale`` below 1 the clipped draws are shrunk towards zero noise
    (``scale * clip(N(0, I))``): the base policy sampled at a lower temperature,
    the baseline a steering that only concentrates the noise must beat.

    :param policy: frozen noise policy
    :param noise_clip: clip of the Gaussian draws
    :param seed: seed of the noise draws
    :param scale: factor on the clipped draws (1: the base policy's own noise)
    """

    def __init__(self, policy: NoisePolicy, noise_clip: float = 3.0, seed: int = 0, scale: float = 1.0):
        super().__init__(policy)
        self.noise_clip = noise_clip
        self.scale = scale
        self.generator = torch.Generator(device=policy.device).manual_seed(seed)

    def noise(self, batch: int) -> torch.Tensor:
        shape = (batch, self.policy.noise_steps, self.policy.action_dim)
        draw = torch.randn(shape, generator=self.generator, device=self.policy.device)
        return self.scale * draw.clamp(-self.noise_clip, self.noise_clip)


class ConstantNoiseAgent(NoiseAgent):
    """The base policy fed the same constant noise everywhere (a deterministic baseline)."""

    def __init__(self, policy: NoisePolicy, value: float = 0.0):
        super().__init__(policy)
        self.value = value

    def noise(self, batch: int) -> torch.Tensor:
        shape = (batch, self.policy.noise_steps, self.policy.action_dim)
        return torch.full(shape, self.value, device=self.policy.device)


BASE_POLICY_PREFIX = "base_policy/noise_x"
"""Metric names of the base policy alone at noise scale S: ``base_policy/noise_x<S>/<evaluate()'s key>``."""


class EvaluationStopped(Exception):
    """An evaluation abandoned because its ``stop`` callable asked for it."""


def evaluate(
    agent: Any,
    env: VecEnv,
    n_episodes: int,
    deterministic: bool,
    seed: int,
    stop: Callable[[], bool] | None = None,
) -> dict[str, float]:
    """Return (and success rate, for tasks that report success) over ``n_episodes`` episodes of ``env``.

    ``env`` is reseeded with ``seed``; ``agent`` is anything with SB3's
    ``predict`` whose actions ``env`` takes. ``stop()`` is asked after every
    step of every env; when it returns True, :class:`EvaluationStopped` is raised.
    """
    env.seed(seed)
    successes: list[bool] = []

    def record_success(local_vars: dict[str, Any], _globals: dict[str, Any]) -> None:
        if stop is not None and stop():
            raise EvaluationStopped
        if local_vars["done"] and "is_success" in local_vars["info"]:
            successes.append(bool(local_vars["info"]["is_success"]))

    returns, _ = evaluate_policy(
        agent,
        env,
        n_eval_episodes=n_episodes,
        deterministic=deterministic,
        callback=record_success,
        return_episode_rewards=True,
    )
    result = {"return_mean": float(np.mean(returns)), "return_std": float(np.std(returns))}
    if successes:
        result["success_rate"] = float(np.mean(successes[:n_episodes]))
    return result


def evaluate_base_policy(
    policy: NoisePolicy,
    env: VecEnv,
    noise_scales: list[float],
    n_episodes: int,
    seed: int,
    stop: Callable[[], bool] | None = None,
) -> dict[str, float]:
    """The base policy alone on ``env`` (its chunk env) at each noise scale, as ``BASE_POLICY_PREFIX`` metrics.

    Each scale plays the episodes ``evaluate(seed=seed)`` plays (those of a DSRL
    agent's evaluation with the same seed), its noise drawn from ``seed`` too;
    keys are ``base_policy/noise_x<S:g>/success_rate`` and so on. ``stop`` as
    in :func:`evaluate` (:class:`EvaluationStopped`).
    """
    metrics = {}
    for scale in noise_scales:
        result = evaluate(BasePolicyAgent(policy, seed=seed, scale=scale), env, n_episodes, False, seed, stop)
        metrics.update({f"{BASE_POLICY_PREFIX}{scale:g}/{key}": value for key, value in result.items()})
    return metrics
