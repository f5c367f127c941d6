"""A scripted pushing expert for gym-pusht's PushT, acting on the 5-number state.

The state is (agent x, agent y, block x, block y, block angle) in pixels and
radians; actions are the agent's target position in [0, 512]^2. The T block is
a 120x30 bar with a 30x90 stem below it in its own frame; the goal pose is
(256, 256, pi/4).

The expert is a function of the current state alone (plus its per-episode
style and the noise), so that a policy conditioned on one observation can
clone it: every step it picks the outline point whose push best reduces the
pose error (see :class:`PushTExpert`), then pushes through that point as far
as the agent stands behind it and goes around the block to stand there
otherwise, blending the two continuously (see :func:`push_target`): a choice
that flipped on the agent's noisy position would make the demonstrations peck
at the block, back and forth, in a way no cloned policy reproduces. Each
episode may draw a style (push depth, standoff, speed, how much rotation
matters) and every target gets Gaussian noise, so the demonstrations vary and
are imperfect. Pixel observations are rendered by the env from the same
states, so the same expert makes the pixel dataset.
"""

from __future__ import annotations

import numpy as np

GOAL = np.array([256.0, 256.0, np.pi / 4])
CENTRE_OF_MASS = np.array([0.0, 45.0])  # block frame: the mean of the bar's (0, 15) and the stem's (0, 75) centres
AGENT_RADIUS = 15.0
CLEARANCE_RADIUS = 110.0  # circle around the centre of mass the agent travels on to reach the far side
CORRIDOR_HALF_WIDTH = 8.0  # px sideways from a contact's normal within which the agent pushes


def _outline() -> tuple[np.ndarray, np.ndarray]:
    """Contact points (N, 2) on the T's outline and their outward normals (N, 2), block frame."""
    edges = [  # (start, end, outward normal), counter-clockwise in the block frame
        ((-60, 0), (60, 0), (0, -1)),
        ((60, 0), (60, 30), (1, 0)),
        ((60, 30), (15, 30), (0, 1)),
        ((15, 30), (15, 120), (1, 0)),
        ((15, 120), (-15, 120), (0, 1)),
        ((-15, 120), (-15, 30), (-1, 0)),
        ((-15, 30), (-60, 30), (0, 1)),
        ((-60, 30), (-60, 0), (-1, 0)),
    ]
    points, normals = [], []
    for start, end, normal in edges:
        start, end = np.asarray(start, float), np.asarray(end, float)
        n_points = max(1, int(np.linalg.norm(end - start) // 15))
        for t in (np.arange(n_points) + 0.5) / n_points:
            points.append(start + t * (end - start))
            normals.append(normal)
    return np.array(points), np.array(normals, float)


OUTLINE_POINTS, OUTLINE_NORMALS = _outline()


def _rotation(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s], [s, c]])


def wrap_angle(angle: float) -> float:
    return (angle + np.pi) % (2 * np.pi) - np.pi


def contact_in_world(state: np.ndarray, contact: int) -> tuple[np.ndarray, np.ndarray]:
    """Outline point ``contact`` (2,) and its outward normal (2,) where the block in ``state`` stands."""
    rotation = _rotation(float(state[4]))
    return state[2:4] + rotation @ OUTLINE_POINTS[contact], rotation @ OUTLINE_NORMALS[contact]


def _ramp(x: float, zero_at: float, one_at: float) -> float:
    """0 at ``zero_at``, 1 at ``one_at``, linear between and clipped: a continuous switch."""
    return float(np.clip((x - zero_at) / (one_at - zero_at), 0.0, 1.0))


def push_target(state: np.ndarray, contact: int, style: dict[str, float], depth: float) -> np.ndarray:
    """The next target (2,) for pushing through outline point ``contact``, inside the arena, before noise.

    Two targets are blended by how well the agent stands behind the point: ``depth`` px past the outline
    (pushing) when it stands in the contact's corridor (along the outward normal, at most ``standoff`` + 8 px
    out, at most ``CORRIDOR_HALF_WIDTH`` px sideways), and the way around the block to the approach point
    ``standoff`` px out otherwise. The weights change continuously with the agent's position, so noise
    near a corridor's edge moves the target a little instead of switching between pushing and backing
    off. Moves are at most ``style["speed"]`` px.
    """
    agent = state[:2]
    point, normal = contact_in_world(state, contact)
    out, side = agent - point, np.array([-normal[1], normal[0]])
    behind = (
        _ramp(abs(out @ side), 2 * CORRIDOR_HALF_WIDTH, CORRIDOR_HALF_WIDTH)
        * _ramp(out @ normal, -5.0, 0.0)
        * _ramp(out @ normal, style["standoff"] + 20.0, style["standoff"] + 8.0)
    )
    around = _around_block(
        agent, state[2:4] + _rotation(float(state[4])) @ CENTRE_OF_MASS, point + style["standoff"] * normal
    )
    target = behind * (point - depth * normal) + (1.0 - behind) * around
    offset = target - agent
    distance = np.linalg.norm(offset)
    if distance > style["speed"]:
        target = agent + offset * (style["speed"] / distance)
    return np.clip(target, 0.0, 512.0)


def _around_block(agent: np.ndarray, com: np.ndarray, goal: np.ndarray) -> np.ndarray:
    """The next waypoint from ``agent`` to ``goal`` that keeps clear of the block around ``com``.

    Far from ``goal`` (in angle about ``com``) the waypoint lies on the clearance circle up to 0.5 rad
    further round, the step round shrinking towards a radial move out when the agent is close to the
    block; close to it, ``goal`` itself; between, a blend of the two.
    """
    start, end = agent - com, goal - com
    radius, start_angle = np.linalg.norm(start), np.arctan2(start[1], start[0])
    gap = wrap_angle(np.arctan2(end[1], end[0]) - start_angle)
    step = np.clip(gap, -0.5, 0.5) * _ramp(radius, 60.0, CLEARANCE_RADIUS - 10.0)
    on_circle = com + CLEARANCE_RADIUS * np.array([np.cos(start_angle + step), np.sin(start_angle + step)])
    direct = _ramp(abs(gap), 0.7, 0.3)
    return direct * goal + (1.0 - direct) * on_circle


GOAL_COM = GOAL[:2] + _rotation(GOAL[2]) @ CENTRE_OF_MASS  # where the block's centre of mass ends up


def pose_error(state: np.ndarray) -> tuple[float, float]:
    """Distance (px) of the block's centre of mass from the goal's and the angle (rad) still to turn."""
    com = state[2:4] + _rotation(float(state[4])) @ CENTRE_OF_MASS
    return float(np.linalg.norm(GOAL_COM - com)), wrap_angle(GOAL[2] - float(state[4]))


class PushTExpert:
    """Pushes chosen afresh at every step by trying the most promising ones in a copy of the simulator.

    The ``candidates`` outline points whose inward push best reduces the pose
    error (translation towards the goal plus torque towards the goal angle)
    are each pushed for ``lookahead`` steps, noise-free, in a private PushT
    env started from the current block pose with the agent at the point's
    approach position; the one that ends with the smallest pose error is the
    contact of this step. Near the goal the pushes get shallower. Each call
    returns the target with noise, to be executed, and keeps the noise-free
    one in ``clean_target``, to be recorded: demonstrations then show how
    the expert recovers from the states the noise leads to (DART).

    :param rng: random generator for styles and target noise
    :param noise: std of the Gaussian noise on every target, in pixels
    :param candidates: outline points tried per step
    :param lookahead: simulated push steps per candidate
    :param vary_style: draw a style per episode; otherwise always the middle of each range (demonstrations
        that a small policy clones more faithfully)
    """

    def __init__(
        self,
        rng: np.random.Generator,
        noise: float = 4.0,
        candidates: int = 6,
        lookahead: int = 5,
        vary_style: bool = True,
    ):
        from dsrl.envs.pusht import PUSHT_ID, make_pusht_env

        self.rng, self.noise, self.candidates, self.lookahead = rng, noise, candidates, lookahead
        self.vary_style = vary_style
        self.simulator = make_pusht_env(PUSHT_ID, 10_000).unwrapped
        self.simulator.reset(seed=0)
        self.reset()

    def reset(self) -> None:
        self.style = dict(
            depth=self._draw(10.0, 30.0),
            standoff=AGENT_RADIUS + self._draw(6.0, 14.0),
            speed=self._draw(25.0, 45.0),
        )
        self.rotation_weight = self._draw(60.0, 120.0)

    def _draw(self, low: float, high: float) -> float:
        return self.rng.uniform(low, high) if self.vary_style else (low + high) / 2

    def _promising_contacts(self, state: np.ndarray) -> np.ndarray:
        position, angle = state[2:4], float(state[4])
        rotation = _rotation(angle)
        com = position + rotation @ CENTRE_OF_MASS
        translation = GOAL_COM - com
        push = -(OUTLINE_NORMALS @ rotation.T)
        lever = (OUTLINE_POINTS - CENTRE_OF_MASS) @ rotation.T
        torque = (lever[:, 0] * push[:, 1] - lever[:, 1] * push[:, 0]) / np.linalg.norm(lever, axis=1)
        score = push @ translation + self.rotation_weight * wrap_angle(GOAL[2] - angle) * torque
        approach = position + (OUTLINE_POINTS + 30.0 * OUTLINE_NORMALS) @ rotation.T
        score[((approach < 20) | (approach > 492)).any(axis=1)] = -np.inf  # unreachable beside a wall
        return np.argsort(-score)[: self.candidates]

    def _weighted_error(self, state: np.ndarray) -> float:
        """Pose error in pixels, the angle weighted by this episode's ``rotation_weight``."""
        distance, turn = pose_error(state)
        return distance + self.rotation_weight * abs(turn)

    def _simulated_error(self, state: np.ndarray, contact: int, depth: float) -> float:
        point, normal = contact_in_world(state, contact)
        sim_state = np.concatenate([point + self.style["standoff"] * normal, state[2:5]])
        self.simulator.reset(options={"reset_to_state": sim_state})
        for _ in range(self.lookahead):
            sim_state, *_ = self.simulator.step(push_target(sim_state, contact, self.style, depth))
        return self._weighted_error(sim_state)

    def __call__(self, state: np.ndarray) -> np.ndarray:
        state = np.asarray(state, dtype=np.float64)
        depth = self.style["depth"] * float(np.clip(self._weighted_error(state) / 40.0, 0.3, 1.0))
        contacts = self._promising_contacts(state)
        errors = [self._simulated_error(state, contact, depth) for contact in contacts]
        self.clean_target = push_target(state, int(contacts[int(np.argmin(errors))]), self.style, depth).astype(
            np.float32
        )
        target = self.clean_target + self.noise * self.rng.standard_normal(2)
        return np.clip(target, 0.0, 512.0).astype(np.float32)
