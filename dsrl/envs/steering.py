"""A small steering task: two goals in the demonstrations, only one of them rewarded.

A point robot starts near (0, -1) and moves with velocity actions (2,) in
[-1, 1] (``max_speed`` per step). Two goals sit at (1, 1) and (-1, 1). The
scripted demonstrator picks one at random per episode, so a policy cloned
from it succeeds about half the time. The episode ends when the robot
crosses the goal line y = 1 - ``goal_radius``: with x > ``goal_half_width``
(the rewarded goal's side) that is a success with reward 1; anywhere else
it ends with reward 0.
DSRL solves it by steering the base policy's noise towards the rewarded mode.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from dsrl.data.trajectories import Trajectories, concatenate, record_episode

GOALS = np.array([[1.0, 1.0], [-1.0, 1.0]], dtype=np.float32)
START = np.array([0.0, -1.0], dtype=np.float32)


class SteeringEnv(gym.Env):
    """Point robot with a rewarded goal (index 0) and a decoy goal (index 1).

    Observation: position (2,). Action: velocity (2,) in [-1, 1].

    :param max_speed: distance moved per step at full action
    :param goal_radius: the goal line lies this far below the goals
    :param goal_half_width: a crossing at x above this reaches the rewarded goal
    :param start_noise: half-width of the uniform start-position noise
    :param render_mode: None or "rgb_array" (a top view: rewarded goal green, decoy red, robot blue)
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(
        self,
        max_speed: float = 0.15,
        goal_radius: float = 0.2,
        goal_half_width: float = 0.5,
        start_noise: float = 0.05,
        render_mode: str | None = None,
    ):
        self.render_mode = render_mode
        self.max_speed = max_speed
        self.goal_radius = goal_radius
        self.goal_half_width = goal_half_width
        self.start_noise = start_noise
        self.observation_space = spaces.Box(-2.0, 2.0, (2,), np.float32)
        self.action_space = spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.position = START.copy()

    def reset(self, *, seed: int | None = None, options=None):
        super().reset(seed=seed)
        self.position = START + self.np_random.uniform(-self.start_noise, self.start_noise, 2).astype(np.float32)
        return self.position.copy(), {}

    def step(self, action):
        velocity = np.clip(np.asarray(action, dtype=np.float32), -1.0, 1.0)
        self.position = np.clip(self.position + self.max_speed * velocity, -2.0, 2.0).astype(np.float32)
        terminated = bool(self.position[1] >= GOALS[0, 1] - self.goal_radius)
        success = terminated and bool(self.position[0] > self.goal_half_width)
        return self.position.copy(), float(success), terminated, False, {"is_success": success}

    def render(self, size: int = 128) -> np.ndarray:
        """A (size, size, 3) uint8 top view of the square [-2, 2]^2, y pointing up."""
        coords = np.linspace(-2.0, 2.0, size)
        x, y = np.meshgrid(coords, coords[::-1])
        image = np.full((size, size, 3), 255, np.uint8)
        for centre, radius, colour in (
            (GOALS[0], self.goal_radius, (60, 180, 75)),
            (GOALS[1], self.goal_radius, (230, 25, 75)),
            (self.position, 0.08, (0, 90, 200)),
        ):
            image[(x - centre[0]) ** 2 + (y - centre[1]) ** 2 <= radius**2] = colour
        return image


def expert_action(position: np.ndarray, goal: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Head for ``goal`` at 80-100% speed with small Gaussian jitter."""
    direction = goal - position
    direction = direction / max(float(np.linalg.norm(direction)), 1e-6)
    action = direction * rng.uniform(0.8, 1.0) + rng.normal(0.0, 0.1, 2)
    return np.clip(action, -1.0, 1.0).astype(np.float32)


def collect_demonstrations(n_episodes: int, seed: int, max_episode_steps: int = 32) -> tuple[Trajectories, float]:
    """Demonstrations that pick either goal with equal probability, and their success rate."""
    env = SteeringEnv()
    rng = np.random.default_rng(seed)
    episodes, successes = [], 0
    for episode in range(n_episodes):
        goal = GOALS[rng.integers(2)]
        steps, info, _ = record_episode(
            env, lambda obs: expert_action(obs, goal, rng), seed * 100_003 + episode, max_episode_steps
        )
        successes += info["is_success"]
        episodes.append(steps)
    return concatenate(episodes), successes / n_episodes
