"""Gymnasium-Robotics Fetch tasks with flat observations.

Observation order (fixed; datasets and checkpoints depend on it), 31 numbers:
the env's ``observation`` (gripper position 3, object position 3, object
position relative to the gripper 3, finger positions 2, object rotation 3,
object linear velocity 3, object angular velocity 3, gripper velocity 3,
finger velocities 2), then ``achieved_goal`` (3), then ``desired_goal`` (3).
Actions are the env's (dx, dy, dz, gripper) in [-1, 1]. Success is the env's
``is_success``.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

FETCH_TASKS = ("FetchPush-v4", "FetchPickAndPlace-v4", "FetchReach-v4", "FetchSlide-v4")
REWARD_TYPES = ("sparse", "dense")
OBS_KEYS = ("observation", "achieved_goal", "desired_goal")


def register_fetch() -> None:
    """Register gymnasium-robotics' envs with gymnasium (idempotent)."""
    import gymnasium_robotics

    gym.register_envs(gymnasium_robotics)


class FlatGoalObservation(gym.Wrapper):
    """Flattens a goal-conditioned dict observation in :data:`OBS_KEYS` order; ``is_success`` as a bool.

    :param env: a Fetch env
    :param terminate_on_success: end the episode at the first successful step
    """

    def __init__(self, env: gym.Env, terminate_on_success: bool):
        super().__init__(env)
        size = sum(env.observation_space[key].shape[0] for key in OBS_KEYS)
        self.observation_space = spaces.Box(-np.inf, np.inf, (size,), np.float32)
        self.terminate_on_success = terminate_on_success

    @staticmethod
    def flatten(obs: dict[str, np.ndarray]) -> np.ndarray:
        return np.concatenate([obs[key] for key in OBS_KEYS]).astype(np.float32)

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        return self.flatten(obs), dict(info, is_success=False)

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        success = bool(info.get("is_success", False))
        info["is_success"] = success
        return self.flatten(obs), reward, terminated or (self.terminate_on_success and success), truncated, info


def check_fetch_config(name: str, kwargs: dict[str, Any]) -> None:
    if name not in FETCH_TASKS:
        raise ValueError(f"env.name={name!r} is not a Fetch task; one of {FETCH_TASKS}")
    reward_type = kwargs.get("reward_type", "sparse")
    if reward_type not in REWARD_TYPES:
        raise ValueError(f"env.kwargs.reward_type={reward_type!r} is not one of {REWARD_TYPES}")


def make_fetch_env(
    name: str,
    max_episode_steps: int,
    reward_type: str = "sparse",
    terminate_on_success: bool = True,
    render_mode: str | None = None,
) -> gym.Env:
    """A Fetch task with flat observations (see the module docstring).

    :param reward_type: ``sparse`` (-1 per step until success, then 0) or ``dense`` (minus the goal distance)
    :param terminate_on_success: end the episode at the first successful step
    """
    check_fetch_config(name, {"reward_type": reward_type})
    register_fetch()
    env = gym.make(name, max_episode_steps=max_episode_steps, reward_type=reward_type, render_mode=render_mode)
    return FlatGoalObservation(env, terminate_on_success)
