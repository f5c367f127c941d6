"""Scripted experts for the Fetch tasks, acting on the flat observation of :mod:`dsrl.envs.fetch`.

Each episode draws a style (gain, hover height, grasp depth, lift, push
standoff) and every action gets Gaussian noise, so the demonstrations vary
and are imperfect, like a human's. Actions are (dx, dy, dz, gripper) in
[-1, 1]; one unit moves the gripper target 5 cm.
"""

from __future__ import annotations

import abc

import numpy as np

GRIP, OBJECT, GOAL = slice(0, 3), slice(3, 6), slice(28, 31)
OPEN, CLOSED = 1.0, -1.0


class FetchExpert(abc.ABC):
    """A state machine over the gripper, object and goal positions.

    :param rng: random generator for styles and action noise
    :param noise: std of the Gaussian noise added to every action (before clipping)
    """

    def __init__(self, rng: np.random.Generator, noise: float = 0.1):
        self.rng, self.noise = rng, noise
        self.reset()

    def reset(self) -> None:
        rng = self.rng
        self.phase, self.wait = 0, 0
        self.gain = rng.uniform(6.0, 14.0)
        self.hover = rng.uniform(0.03, 0.08)
        self.depth = rng.uniform(-0.01, 0.005)
        self.standoff = rng.uniform(0.04, 0.07)

    def move(self, grip: np.ndarray, target: np.ndarray, gripper: float) -> np.ndarray:
        action = np.append(self.gain * (target - grip), gripper)
        action = action + self.noise * self.rng.standard_normal(4)
        return np.clip(action, -1.0, 1.0).astype(np.float32)

    @abc.abstractmethod
    def __call__(self, obs: np.ndarray) -> np.ndarray:
        """The action (4,) for a flat observation (31,)."""


class PickAndPlaceExpert(FetchExpert):
    """Hover over the object, descend, close the gripper, carry the object to the goal."""

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        grip, obj, goal = obs[GRIP], obs[OBJECT], obs[GOAL]
        above = obj + np.array([0.0, 0.0, self.hover])
        if self.phase == 0:
            if np.linalg.norm((above - grip)[:2]) < 0.01 and abs(above[2] - grip[2]) < 0.02:
                self.phase = 1
            return self.move(grip, above, OPEN)
        if self.phase == 1:
            target = obj + np.array([0.0, 0.0, self.depth])
            if np.linalg.norm(target - grip) < 0.01:
                self.phase = 2
            return self.move(grip, target, OPEN)
        if self.phase == 2:
            self.wait += 1
            if self.wait >= 3:
                self.phase = 3
            return self.move(grip, grip, CLOSED)
        return self.move(grip, goal + (grip - obj), CLOSED)


class PushExpert(FetchExpert):
    """Go behind the object (seen from the goal), lower to it, push it towards the goal."""

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        grip, obj, goal = obs[GRIP], obs[OBJECT], obs[GOAL]
        to_goal = goal[:2] - obj[:2]
        direction = to_goal / max(np.linalg.norm(to_goal), 1e-6)
        behind = obj.copy()
        behind[:2] -= self.standoff * direction
        if self.phase == 0:
            target = behind + np.array([0.0, 0.0, self.hover])
            if np.linalg.norm((target - grip)[:2]) < 0.01:
                self.phase = 1
            return self.move(grip, target, CLOSED)
        if self.phase == 1:
            if abs(behind[2] - grip[2]) < 0.01:
                self.phase = 2
            return self.move(grip, behind, CLOSED)
        target = obj.copy()
        target[:2] += 0.03 * direction
        if np.linalg.norm((grip - behind)[:2]) > 0.03 + self.standoff:
            self.phase = 0
        return self.move(grip, target, CLOSED)


FETCH_EXPERTS = {"FetchPickAndPlace-v4": PickAndPlaceExpert, "FetchPush-v4": PushExpert}
