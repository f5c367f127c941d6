"""Robomimic tasks (lift, can, square, transport) as gymnasium envs with low-dimensional observations.

Envs are built from a Robomimic/DPPO ``env_meta`` JSON with robomimic's own
env utilities, pinned to robosuite 1.4.1 (the version DPPO's files and
checkpoints were made with; 1.5 orders the ``object`` observation
differently). robomimic 0.3.0 imports ``mujoco_py`` at module level although
it never uses it with robosuite 1.4, so a stub module stands in for it.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import types
from typing import Any, Iterator, Sequence

import gymnasium as gym
import mujoco
import numpy as np
from gymnasium import spaces

from dsrl.config import repo_path

TASKS = ("lift", "can", "square", "transport")
ARM_KEYS = ("eef_pos", "eef_quat", "gripper_qpos")
LOW_DIM_KEYS = {
    "lift": [f"robot0_{k}" for k in ARM_KEYS] + ["object"],
    "can": [f"robot0_{k}" for k in ARM_KEYS] + ["object"],
    "square": [f"robot0_{k}" for k in ARM_KEYS] + ["object"],
    "transport": [f"robot{r}_{k}" for r in (0, 1) for k in ARM_KEYS] + ["object"],
}
MAX_EPISODE_STEPS = {"lift": 300, "can": 300, "square": 400, "transport": 800}
SAME_MODEL_EVERY_RESET = ("PickPlaceCan", "NutAssemblySquare")
"""robosuite tasks (env_meta ``env_name``) whose model robosuite's reset rebuilds the same every time, drawing no random
numbers while building it (Lift draws its cube's size, Transport draws too): for them resetting the simulation state
alone gives bitwise the same episodes (tests)."""
ROBOT_KEYS = (
    "joint_pos",
    "joint_pos_cos",
    "joint_pos_sin",
    "joint_vel",
    "eef_pos",
    "eef_quat",
    "eef_vel_lin",
    "eef_vel_ang",
    "gripper_qpos",
    "gripper_qvel",
)


def env_meta_path(task: str) -> str:
    """The shipped env_meta JSON of a task (``cfg/robomimic/env_meta/<task>.json``)."""
    if task not in TASKS:
        raise ValueError(f"env.name={task!r} is not a Robomimic task; known: {list(TASKS)}")
    return repo_path(f"cfg/robomimic/env_meta/{task}.json")


def load_env_meta(path: str) -> dict[str, Any]:
    """Read an env_meta JSON; a missing or unparsable file, or one without env_name/env_kwargs, raises."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"env_meta file {path!r} does not exist")
    try:
        with open(path) as f:
            meta = json.load(f)
    except json.JSONDecodeError as exc:
        raise ValueError(f"env_meta file {path!r} is not valid JSON: {exc}") from None
    for key in ("env_name", "env_kwargs"):
        if key not in meta:
            raise ValueError(f"env_meta file {path!r} has no {key!r}")
    return meta


def check_robomimic_config(name: str, kwargs: dict[str, Any]) -> None:
    """Check task name, env_meta file and observation keys without building a simulator."""
    if kwargs.get("env_meta"):
        load_env_meta(kwargs["env_meta"])
    else:
        env_meta_path(name)
    robots = 2 if name == "transport" else 1
    known = {f"robot{r}_{k}" for r in range(robots) for k in ROBOT_KEYS} | {"object"}
    for key in kwargs.get("obs_keys") or []:
        if key not in known:
            raise ValueError(
                f"env.kwargs.obs_keys has {key!r}, which task {name!r} does not provide; known: {sorted(known)}"
            )


def import_robomimic_env_utils():
    """robomimic's ``env_utils`` and ``obs_utils``, importable without mujoco_py."""
    sys.modules.setdefault("mujoco_py", types.ModuleType("mujoco_py"))
    import robomimic.utils.env_utils as env_utils
    import robomimic.utils.obs_utils as obs_utils

    return env_utils, obs_utils


@contextlib.contextmanager
def drawing_from(rng: np.random.RandomState) -> Iterator[None]:
    """Make ``rng`` numpy's global generator while the block runs (robosuite draws its scenes from the global one):
    the block's draws advance ``rng``, and the global generator is left as it was."""
    outer = np.random.get_state()
    np.random.set_state(rng.get_state())
    try:
        yield
    finally:
        rng.set_state(np.random.get_state())
        np.random.set_state(outer)


def _step_with_split_dynamics(self, action: np.ndarray) -> tuple:
    """robosuite's own ``step`` on MuJoCo's split step (see :func:`split_substep_dynamics`)."""
    sim = self.sim
    model, data = sim.model._model, sim.data._data
    current = False

    def forward() -> None:
        nonlocal current
        if not current:
            mujoco.mj_step1(model, data)
            current = True

    def step() -> None:
        nonlocal current
        (mujoco.mj_step2 if current else mujoco.mj_step)(model, data)
        current = False

    sim.forward, sim.step = forward, step
    try:
        return type(self).step(self, action)
    finally:
        del sim.forward, sim.step


def split_substep_dynamics(robosuite_env: Any) -> None:
    """Compute each physics substep's dynamics once instead of robosuite's 3 (one arm) or 4 (two arms) times.

    robosuite 1.4.1's ``step()`` runs, per substep, ``sim.forward()``, then
    ``_pre_action``, where each arm's controller calls ``sim.forward()`` again
    before reading positions, Jacobians and the mass matrix and setting
    ``ctrl``, then ``sim.step()`` (``mj_step``, which computes forward dynamics
    once more before integrating). This runs that loop on MuJoCo's split step
    instead, its documented way to control from position- and velocity-dependent
    quantities: the substep's first ``sim.forward()`` is ``mj_step1`` (position
    and velocity stages), the controllers' repeats are no-ops (nothing but
    ``ctrl`` changes in between, and none of what they read depends on it), and
    ``sim.step()`` is ``mj_step2`` (actuation, acceleration, integration). The
    patch is an instance attribute over robosuite's ``step``, active only while
    it runs; the simulator robosuite builds at each reset is looked up per step.
    Trajectories stay bitwise the same (tests); a Can step costs ~1/3 less.

    :raises ValueError: for a model with the RK4 integrator, which ``mj_step2`` does not run
    """
    integrator = robosuite_env.sim.model.opt.integrator
    if integrator == mujoco.mjtIntegrator.mjINT_RK4:
        raise ValueError(
            f"{type(robosuite_env).__name__} integrates with RK4, which MuJoCo's split step does not support: "
            "build RobomimicLowDimEnv with split_dynamics=False"
        )
    robosuite_env.step = types.MethodType(_step_with_split_dynamics, robosuite_env)


class RobomimicLowDimEnv(gym.Env):
    """A Robomimic task with the listed low-dimensional observation keys, concatenated in order.

    Reward is the task's sparse success reward (1 on a step in the success
    state, else 0). With ``terminate_on_success`` the episode ends at the first
    success; without it (the DSRL authors' episodes) it runs on to the time
    limit. ``info["is_success"]`` reports the step's success
    (:class:`~dsrl.envs.wrappers.ActionChunkWrapper` counts an episode a
    success if any step was, the authors' measure). robosuite draws each scene
    (object placement, and Lift's cube size) from numpy's global generator; the
    env's own generator ``scene_rng`` stands in for it during resets
    (:func:`drawing_from`), so ``reset(seed=...)`` always gives the same initial
    scene and envs in one process (``env.vec_env=dummy``) neither reseed the
    learner's generator nor draw from each other's. ``raw_obs`` holds the latest
    observation dict with every key the simulator provides.

    :param env_meta: Robomimic env_meta dict (env name, env kwargs, controller config)
    :param obs_keys: low-dimensional observation keys, concatenated in this order
    :param terminate_on_success: end the episode at the first success
    :param render_mode: None or "rgb_array" (offscreen, from the ``agentview`` camera; needs MUJOCO_GL=egl|osmesa)
    :param split_dynamics: step on MuJoCo's split step, each substep's dynamics computed once
        (:func:`split_substep_dynamics`; the same trajectories, faster); False keeps robosuite's own step, to compare
    :param fast_reset: for the tasks in :data:`SAME_MODEL_EVERY_RESET` (Can, Square), reset the simulation state
        instead of rebuilding the MuJoCo model from XML (robosuite's ``hard_reset``, which the env_meta files leave
        on): ~0.25 s less per episode, bitwise the same episodes; an env_meta that sets ``hard_reset`` is obeyed;
        False: robosuite's rebuild on every task
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 20}
    camera = "agentview"
    image_size = 256

    def __init__(
        self,
        env_meta: dict[str, Any],
        obs_keys: Sequence[str],
        terminate_on_success: bool = True,
        render_mode: str | None = None,
        split_dynamics: bool = True,
        fast_reset: bool = True,
    ):
        env_utils, obs_utils = import_robomimic_env_utils()
        obs_utils.initialize_obs_modality_mapping_from_dict({"low_dim": list(obs_keys)})
        self.render_mode = render_mode
        self.env = env_utils.create_env_from_metadata(
            env_meta=env_meta, render=False, render_offscreen=render_mode is not None, use_image_obs=False
        )
        if split_dynamics:
            split_substep_dynamics(self.env.env)
        if fast_reset and env_meta["env_name"] in SAME_MODEL_EVERY_RESET and "hard_reset" not in env_meta["env_kwargs"]:
            self.env.env.hard_reset = False
        self.obs_keys = list(obs_keys)
        self.terminate_on_success = terminate_on_success
        self.scene_rng = np.random.RandomState()
        with drawing_from(self.scene_rng):
            raw = self.raw_obs = self.env.reset()
        missing = [k for k in self.obs_keys if k not in raw]
        if missing:
            raise ValueError(
                f"env {env_meta['env_name']} provides no observation key(s) {missing}; it has {sorted(raw)}"
            )
        obs_dim = sum(int(np.prod(raw[k].shape)) for k in self.obs_keys)
        self.observation_space = spaces.Box(-np.inf, np.inf, (obs_dim,), np.float32)
        self.action_space = spaces.Box(-1.0, 1.0, (self.env.action_dimension,), np.float32)

    def _flatten(self, raw: dict[str, np.ndarray]) -> np.ndarray:
        return np.concatenate([np.ravel(raw[k]) for k in self.obs_keys]).astype(np.float32)

    def reset(self, *, seed: int | None = None, options=None):
        super().reset(seed=seed)
        if seed is not None:
            self.scene_rng.seed(seed)
        with drawing_from(self.scene_rng):
            self.raw_obs = self.env.reset()
        return self._flatten(self.raw_obs), {}

    def step(self, action):
        raw, reward, _, _ = self.env.step(np.asarray(action, dtype=np.float64))
        self.raw_obs = raw
        success = bool(self.env.is_success()["task"])
        terminated = success and self.terminate_on_success
        return self._flatten(raw), float(reward), terminated, False, {"is_success": success}

    def render(self) -> np.ndarray:
        """The ``agentview`` camera image (256, 256, 3), upright."""
        return self.env.render(mode="rgb_array", height=self.image_size, width=self.image_size, camera_name=self.camera)

    def close(self) -> None:
        self.env.env.close()


def make_robomimic_env(
    name: str,
    max_episode_steps: int,
    env_meta: str | None = None,
    obs_keys: Sequence[str] | None = None,
    terminate_on_success: bool = True,
    render_mode: str | None = None,
) -> RobomimicLowDimEnv:
    """A Robomimic task by name, from its shipped env_meta unless ``env_meta`` (a path) is given."""
    meta = load_env_meta(env_meta or env_meta_path(name))
    return RobomimicLowDimEnv(meta, obs_keys or LOW_DIM_KEYS[name], terminate_on_success, render_mode)
