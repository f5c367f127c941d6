"""Scripted Robomimic experts: waypoint state machines over object and end-effector poses.

Actions are OSC_POSE deltas as in the Robomimic env configs: ``[dx, dy, dz,
drx, dry, drz, gripper]`` in [-1, 1], scaled by the controller to ±0.05 m and
±0.5 rad per step; gripper -1 opens, +1 closes. Each episode draws a
:class:`Style` (speed, hover height, grasp offset, a via-point on the
approach) and every action gets Gaussian noise, so demonstrations are
diverse and imperfect like Robomimic's multi-human data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.spatial.transform import Rotation

from dsrl.envs.robomimic import RobomimicLowDimEnv

POSITION_SCALE = 0.05
POSITION_GAIN = 2.0
ROTATION_SCALE = 0.5
OPEN, CLOSED = -1.0, 1.0


@dataclass(frozen=True)
class Style:
    """One episode's way of doing the task, drawn at reset.

    :param speed: largest position action (fraction of the controller's 0.05 m step)
    :param hover: height above the grasp point (m) before descending
    :param grasp_offset: (3,) gripper target relative to the object's centre (m)
    :param via: (3,) offset (m) of a via-point halfway along the approach
    """

    speed: float
    hover: float
    grasp_offset: np.ndarray
    via: np.ndarray

    @classmethod
    def draw(cls, rng: np.random.Generator) -> "Style":
        return cls(
            speed=rng.uniform(0.5, 1.0),
            hover=rng.uniform(0.04, 0.12),
            grasp_offset=np.r_[rng.uniform(-0.005, 0.005, 2), rng.uniform(-0.01, 0.005)],
            via=rng.uniform([-0.08, -0.08, 0.0], [0.08, 0.08, 0.08]),
        )


@dataclass(frozen=True)
class Waypoint:
    """Move the end effector to ``position`` (m) with the gripper at ``gripper``, turned ``yaw`` (rad).

    ``yaw`` is a rotation about the world z axis from the end effector's
    orientation at reset. The expert moves on after ``hold`` steps within
    ``tolerance`` (m) of ``position``.
    """

    position: np.ndarray
    gripper: float
    tolerance: float = 0.02
    hold: int = 1
    yaw: float = 0.0


class ScriptedExpert:
    """Follows a list of waypoints planned at reset from the scene; subclasses plan the task.

    :param env: the Robomimic env whose ``raw_obs`` the expert reads
    :param rng: generator for styles and action noise
    :param noise: std of the Gaussian noise added to every action dimension
    """

    def __init__(self, env: RobomimicLowDimEnv, rng: np.random.Generator, noise: float = 0.1):
        self.env = env
        self.rng = rng
        self.noise = noise

    def plan(self, obj: np.ndarray, eef: np.ndarray, style: Style) -> list[Waypoint]:
        """Waypoints for one episode from the object's and end effector's positions (m)."""
        raise NotImplementedError

    def pick(self, obj: np.ndarray, eef: np.ndarray, style: Style, yaw: float = 0.0) -> list[Waypoint]:
        """Via-point, hover above the object, descend, close the gripper; turned ``yaw`` from the start."""
        grasp = obj + style.grasp_offset
        above = grasp + [0.0, 0.0, style.hover]
        return [
            Waypoint((eef + above) / 2 + style.via, OPEN, tolerance=0.04, yaw=yaw),
            Waypoint(above, OPEN, yaw=yaw),
            Waypoint(grasp, OPEN, tolerance=0.01, yaw=yaw),
            Waypoint(grasp, CLOSED, tolerance=0.05, hold=8, yaw=yaw),
        ]

    def reset(self) -> None:
        """Plan the episode from the env's current scene (call after ``env.reset``)."""
        raw = self.env.raw_obs
        self.style = Style.draw(self.rng)
        self.waypoints = self.plan(np.asarray(raw["object"][:3]), np.asarray(raw["robot0_eef_pos"]), self.style)
        self.index, self.held = 0, 0
        self.orientation = Rotation.from_quat(raw["robot0_eef_quat"])

    def act(self) -> np.ndarray:
        """The next action (7,) for the env's current observation."""
        raw = self.env.raw_obs
        waypoint = self.waypoints[self.index]
        error = waypoint.position - raw["robot0_eef_pos"]
        if np.linalg.norm(error) < waypoint.tolerance:
            self.held += 1
            if self.held >= waypoint.hold and self.index < len(self.waypoints) - 1:
                self.index, self.held = self.index + 1, 0
        position = np.clip(POSITION_GAIN * error / POSITION_SCALE, -1.0, 1.0) * self.style.speed
        target = Rotation.from_rotvec([0.0, 0.0, waypoint.yaw]) * self.orientation
        rotation = (target * Rotation.from_quat(raw["robot0_eef_quat"]).inv()).as_rotvec()
        action = np.r_[position, np.clip(rotation / ROTATION_SCALE, -1.0, 1.0), waypoint.gripper]
        return np.clip(action + self.noise * self.rng.standard_normal(7), -1.0, 1.0)


class LiftExpert(ScriptedExpert):
    """Pick the cube up and hold it 10-20 cm above the table."""

    def plan(self, obj: np.ndarray, eef: np.ndarray, style: Style) -> list[Waypoint]:
        lift = obj + [0.0, 0.0, self.rng.uniform(0.1, 0.2)]
        return self.pick(obj, eef, style) + [Waypoint(lift, CLOSED)]


class CanExpert(ScriptedExpert):
    """Pick the can, carry it over its bin, drop it there and back off (success needs the gripper away).

    The drop point lies in the near part of the can's bin, clear of the dividers: its far corner is
    at the edge of the Panda's reach, where the arm sags under the can.
    """

    def plan(self, obj: np.ndarray, eef: np.ndarray, style: Style) -> list[Waypoint]:
        robosuite_env = self.env.env.env
        bin_low = robosuite_env.bin2_pos[:2]
        carry = self.rng.uniform(0.98, 1.04)
        drop = np.r_[bin_low + self.rng.uniform([0.05, 0.06], [0.09, 0.1]), carry]
        return self.pick(obj, eef, style) + [
            Waypoint(np.r_[obj[:2], carry], CLOSED, tolerance=0.04),
            Waypoint(drop, CLOSED, tolerance=0.03),
            Waypoint(drop, OPEN, tolerance=0.05, hold=4),
            Waypoint(drop + [0.0, 0.0, 0.1], OPEN),
        ]


class SquareExpert(ScriptedExpert):
    """Grasp the square nut by its handle, carry it over the square peg square to it, and drop it down the peg.

    The gripper turns to the nut's yaw to grasp the handle across its width
    (the fingers close along world y at reset), then turns while carrying so
    that the nut's sides line up with the peg's (the peg's diagonal is 0.6 mm
    narrower than the hole) and its handle points left, right or towards the
    robot, whichever is the smallest turn.
    """

    HANDLE = 0.054  # m, handle centre from the nut's centre along the nut's x axis
    GRASP_HEIGHT = 0.015  # m above the table: the handle is 2 cm thick, the grasp offset reaches 1 cm below

    def plan(self, obj: np.ndarray, eef: np.ndarray, style: Style) -> list[Waypoint]:
        robosuite_env = self.env.env.env
        peg = robosuite_env.sim.data.body_xpos[robosuite_env.peg1_body_id]
        nut_yaw = Rotation.from_quat(self.env.raw_obs["object"][3:7]).as_euler("xyz")[2]
        grasp_yaw = (nut_yaw + np.pi / 2) % np.pi - np.pi / 2
        # the handle may end up pointing left, towards the robot or right (away from it the arm sags out of reach)
        turns = [(handle_yaw - nut_yaw + np.pi) % (2 * np.pi) - np.pi for handle_yaw in (np.pi / 2, np.pi, -np.pi / 2)]
        turn = min(turns, key=lambda turn: (abs(turn), abs(grasp_yaw + turn)))
        square_yaw = grasp_yaw + turn
        # the nut is placed above the table at reset and drops onto it
        handle = np.r_[obj[:2] + self.HANDLE * yaw_axis(nut_yaw), robosuite_env.table_offset[2] + self.GRASP_HEIGHT]
        handle_over_peg = np.r_[peg[:2] + self.HANDLE * yaw_axis(nut_yaw + turn), 0.0]
        carry = self.rng.uniform(1.02, 1.06)
        down = self.rng.uniform(0.84, 0.85)
        return self.pick(handle, eef, style, grasp_yaw) + [
            Waypoint(np.r_[handle[:2], carry], CLOSED, tolerance=0.04, yaw=grasp_yaw),
            Waypoint(handle_over_peg + [0.0, 0.0, carry], CLOSED, tolerance=0.01, hold=4, yaw=square_yaw),
            Waypoint(handle_over_peg + [0.0, 0.0, down], CLOSED, tolerance=0.01, yaw=square_yaw),
            Waypoint(handle_over_peg + [0.0, 0.0, down], OPEN, tolerance=0.05, hold=4, yaw=square_yaw),
            Waypoint(handle_over_peg + [0.0, 0.0, carry], OPEN, yaw=square_yaw),
        ]


def yaw_axis(yaw: float) -> np.ndarray:
    """The (2,) unit vector of a body's x axis in the world's xy plane for a rotation ``yaw`` (rad) about z."""
    return np.array([np.cos(yaw), np.sin(yaw)])


EXPERTS = {"lift": LiftExpert, "can": CanExpert, "square": SquareExpert}


def run_expert_episode(expert: ScriptedExpert, seed: int, max_steps: int) -> tuple[dict[str, Any], bool]:
    """One episode from ``env.reset(seed=seed)``, recorded for :func:`dsrl.data.robomimic_hdf5.write_demos`.

    :return: the demo (per-step ``obs`` dicts, ``actions``, ``rewards``,
        ``dones``, flattened simulator ``states``) and whether it succeeded
    """
    env = expert.env
    env.reset(seed=seed)
    expert.reset()
    demo: dict[str, list] = {"obs": [], "actions": [], "rewards": [], "dones": [], "states": []}
    success = False
    for _ in range(max_steps):
        action = expert.act()
        demo["obs"].append(dict(env.raw_obs))
        demo["states"].append(env.env.get_state()["states"])
        _, reward, terminated, _, info = env.step(action)
        success = info["is_success"]
        for key, value in zip(("actions", "rewards", "dones"), (action, reward, float(terminated))):
            demo[key].append(value)
        if terminated:
            break
    return {k: v if k == "obs" else np.asarray(v) for k, v in demo.items()}, success
