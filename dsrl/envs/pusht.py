"""gym-pusht's PushT with flat observations, from state or from pixels.

- ``obs_type=state``: (agent x, agent y, block x, block y, block angle), 5 numbers.
- ``obs_type=environment_state_agent_pos``: the T's 8 corners (x, y each,
  16 numbers, in gym-pusht's order: the bar's 4, then the stem's 4), then the
  agent position (2): 18 numbers. The keypoint state of Diffusion Policy and
  LeRobot; the agent's place relative to the block is a difference of inputs
  here, not a rotation, so an MLP policy clones pushing from it far better
  than from the angle.
- ``obs_type=pixels_agent_pos``: the 96x96 RGB image as channels-first
  pixels (3 * 96 * 96 numbers in [0, 255], C, H, W order), then the agent
  position (2): 27,650 numbers. Image policies (``base_policy.image_shape:
  [3, 96, 96]``) split them back; the normalisation maps pixels to [-1, 1].

Actions are the agent's target position in [0, 512]^2. Success is the env's
``is_success``: block coverage of the goal above ``success_threshold``, which
ends the episode. The reward (``reward_type``) is gym-pusht's ``dense`` one,
coverage / ``success_threshold`` clipped to [0, 1], or ``sparse``: 1 at
success, else 0. Pixel envs draw their image only on the steps whose
observation is read (:mod:`dsrl.envs.pusht_on_demand`).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

PUSHT_ID = "gym_pusht/PushT-v0"
OBS_TYPES = ("state", "environment_state_agent_pos", "pixels_agent_pos")
REWARD_TYPES = ("dense", "sparse")
IMAGE_SHAPE = (3, 96, 96)  # (C, H, W) of the image in a pixels_agent_pos observation
PIXELS = math.prod(IMAGE_SHAPE)  # numbers of the image in a pixels_agent_pos observation


class FlatPixelsAgentPos(gym.ObservationWrapper):
    """``{"pixels": (H, W, 3) uint8, "agent_pos": (2,)}`` -> [pixels as (3, H, W) flattened, agent_pos]."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        height, width, channels = env.observation_space["pixels"].shape
        self.observation_space = spaces.Box(0.0, 512.0, (channels * height * width + 2,), np.float32)

    def observation(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        pixels = np.moveaxis(obs["pixels"], -1, 0).reshape(-1)
        return np.concatenate([pixels, obs["agent_pos"]]).astype(np.float32)


class FlatKeypointsAgentPos(gym.ObservationWrapper):
    """``{"environment_state": (16,), "agent_pos": (2,)}`` -> [keypoints, agent_pos], 18 numbers."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self.observation_space = spaces.Box(-np.inf, np.inf, (18,), np.float32)

    def observation(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        return np.concatenate([obs["environment_state"], obs["agent_pos"]]).astype(np.float32)


class SparseSuccessReward(gym.Wrapper):
    """Reward 1 at the step that reaches success (``info["is_success"]``), else 0."""

    def step(self, action):
        obs, _, terminated, truncated, info = self.env.step(action)
        return obs, float(info["is_success"]), terminated, truncated, info


def pusht_state(env: gym.Env) -> np.ndarray:
    """The 5-number state (agent x, y, block x, y, angle in [0, 2 pi)) of a PushT env, whatever it observes."""
    sim = env.unwrapped
    return np.array([*sim.agent.position, *sim.block.position, sim.block.angle % (2 * np.pi)])


def check_pusht_config(name: str, kwargs: dict[str, Any]) -> None:
    if name != PUSHT_ID:
        raise ValueError(f"env.name={name!r}: the pusht suite has one task, {PUSHT_ID!r}")
    obs_type = kwargs.get("obs_type", "state")
    if obs_type not in OBS_TYPES:
        raise ValueError(f"env.kwargs.obs_type={obs_type!r} is not one of {OBS_TYPES}")
    threshold = kwargs.get("success_threshold", 0.95)
    if not 0 < threshold <= 1:
        raise ValueError(f"env.kwargs.success_threshold={threshold} must be in (0, 1]")
    reward_type = kwargs.get("reward_type", "dense")
    if reward_type not in REWARD_TYPES:
        raise ValueError(f"env.kwargs.reward_type={reward_type!r} is not one of {REWARD_TYPES}")


def make_pusht_env(
    name: str,
    max_episode_steps: int,
    obs_type: str = "state",
    success_threshold: float = 0.95,
    reward_type: str = "dense",
    render_mode: str | None = None,
) -> gym.Env:
    """PushT with flat observations (see the module docstring).

    :param obs_type: one of ``OBS_TYPES``
    :param success_threshold: goal coverage that counts as success (and ends the episode); gym-pusht's is 0.95
    :param reward_type: one of ``REWARD_TYPES``: ``dense`` (clipped coverage / success_threshold, gym-pusht's) or
        ``sparse`` (1 at success, else 0)
    """
    check_pusht_config(name, {"obs_type": obs_type, "success_threshold": success_threshold, "reward_type": reward_type})
    import gym_pusht  # noqa: F401  (registers the env)

    spec = gym.spec(name)
    if obs_type == "pixels_agent_pos":
        from dsrl.envs.pusht_on_demand import PushTObservedOnDemand

        spec = dataclasses.replace(spec, entry_point=PushTObservedOnDemand)
    env = gym.make(spec, obs_type=obs_type, max_episode_steps=max_episode_steps, render_mode=render_mode or "rgb_array")
    env.unwrapped.success_threshold = success_threshold
    if reward_type == "sparse":
        env = SparseSuccessReward(env)
    flatten = {"pixels_agent_pos": FlatPixelsAgentPos, "environment_state_agent_pos": FlatKeypointsAgentPos}
    return flatten[obs_type](env) if obs_type in flatten else env
