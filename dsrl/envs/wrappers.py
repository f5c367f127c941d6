"""Gymnasium wrappers between a simulator and the policies.

Stacking order (see ``dsrl.envs.factory``): simulator -> :class:`NormalizeWrapper`
(observations to [-1, 1], actions from [-1, 1] to simulator units) ->
:class:`ActionChunkWrapper` (one step = one action chunk) -> SB3 VecEnv.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from dsrl.base_policies.normalization import Normalizer


class NormalizeWrapper(gym.Wrapper):
    """Observations normalised with a DPPO normalisation file; actions in [-1, 1] mapped back.

    Raw actions are clipped to the simulator's bounds after unnormalising.

    :param env: simulator with Box observation (obs_dim,) and action (action_dim,) spaces
    :param normalizer: bounds whose dimensions must match the simulator's
    """

    def __init__(self, env: gym.Env, normalizer: Normalizer):
        super().__init__(env)
        obs_dim = env.observation_space.shape[0]
        action_dim = env.action_space.shape[0]
        if normalizer.obs_dim != obs_dim:
            raise ValueError(f"normalization obs_min has {normalizer.obs_dim} dims, the env observes {obs_dim}")
        if normalizer.action_dim != action_dim:
            raise ValueError(f"normalization action_min has {normalizer.action_dim} dims, the env acts in {action_dim}")
        self.normalizer = normalizer
        self.observation_space = spaces.Box(-np.inf, np.inf, (obs_dim,), np.float32)
        self.action_space = spaces.Box(-1.0, 1.0, (action_dim,), np.float32)

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        return self.normalizer.normalize_obs(obs), info

    def step(self, action):
        raw = self.normalizer.unnormalize_action(np.asarray(action))
        raw = np.clip(raw, self.env.action_space.low, self.env.action_space.high)
        obs, reward, terminated, truncated, info = self.env.step(raw)
        return self.normalizer.normalize_obs(obs), reward, terminated, truncated, info


class ActionChunkWrapper(gym.Wrapper):
    """Plays a whole action chunk per step and stacks observation history.

    One wrapped step runs up to ``chunk`` simulator steps, sums their rewards,
    stops at the first termination or truncation inside the chunk, and
    truncates once ``max_episode_steps`` simulator steps have run. The
    observation is the last ``cond_steps`` simulator observations, oldest
    first, flattened (repeated first observation after a reset).

    A simulator with a ``skip_observation`` attribute (pixel PushT, see
    :mod:`dsrl.envs.pusht_on_demand`) is told, with ``cond_steps=1``, to skip
    drawing the observations of all but a chunk's last step.

    ``info`` carries ``sim_steps`` (simulator steps this chunk ran), for
    tasks that report it ``is_success`` (whether any simulator step of the
    episode so far reported success: an episode that runs on after its
    success, as Robomimic's do, still counts it) and, with ``record_frames``, ``frames``: the
    rendered image (H, W, 3) after each simulator step.

    :param env: env with Box observation (obs_dim,) and action (action_dim,) spaces
    :param chunk: simulator steps per action chunk
    :param max_episode_steps: simulator steps after which the episode is truncated
    :param cond_steps: observations stacked into one policy observation
    :param record_frames: render the env after every simulator step (it needs render_mode="rgb_array")
    """

    def __init__(
        self, env: gym.Env, chunk: int, max_episode_steps: int, cond_steps: int = 1, record_frames: bool = False
    ):
        super().__init__(env)
        if chunk < 1 or max_episode_steps < 1 or cond_steps < 1:
            raise ValueError(
                f"chunk={chunk}, max_episode_steps={max_episode_steps}, cond_steps={cond_steps} must all be >= 1"
            )
        self.chunk = chunk
        self.max_episode_steps = max_episode_steps
        self.cond_steps = cond_steps
        self.record_frames = record_frames
        inner_obs, inner_act = env.observation_space, env.action_space
        self.action_dim = inner_act.shape[0]
        self.observation_space = spaces.Box(
            np.tile(inner_obs.low, cond_steps), np.tile(inner_obs.high, cond_steps), dtype=np.float32
        )
        self.action_space = spaces.Box(np.tile(inner_act.low, chunk), np.tile(inner_act.high, chunk), dtype=np.float32)
        self._history: deque = deque(maxlen=cond_steps)
        self._elapsed = 0
        self._succeeded: bool | None = None
        self._skipping_sim = env.unwrapped if cond_steps == 1 and hasattr(env.unwrapped, "skip_observation") else None

    def _observation(self) -> np.ndarray:
        return np.concatenate(self._history).astype(np.float32)

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        self._elapsed = 0
        self._succeeded = None
        self._history.extend([obs] * self.cond_steps)
        return self._observation(), info

    def step(self, action):
        actions = np.asarray(action, dtype=np.float32).reshape(self.chunk, self.action_dim)
        total_reward, terminated, truncated = 0.0, False, False
        info: dict[str, Any] = {}
        sim_steps = 0
        frames = []
        last_index = min(self.chunk, self.max_episode_steps - self._elapsed) - 1
        for index, step_action in enumerate(actions):
            if self._skipping_sim is not None:
                self._skipping_sim.skip_observation = index < last_index
            obs, reward, terminated, truncated, info = self.env.step(step_action)
            if self.record_frames:
                frames.append(self.env.render())
            self._history.append(obs)
            self._elapsed += 1
            sim_steps += 1
            total_reward += float(reward)
            if "is_success" in info:
                self._succeeded = bool(self._succeeded) or bool(info["is_success"])
            if self._elapsed >= self.max_episode_steps:
                truncated = True
            if terminated or truncated:
                break
        info = dict(info, sim_steps=sim_steps)
        if self._succeeded is not None:
            info["is_success"] = self._succeeded
        if self.record_frames:
            info["frames"] = frames
        return self._observation(), total_reward, terminated, truncated, info
