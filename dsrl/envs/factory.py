"""Build the chunked, normalised environments a run trains and evaluates on.

``env`` config keys: ``suite`` (``gym`` | ``robomimic`` | ``fetch`` | ``pusht`` | ``steering``),
``name`` (the suite's task id), ``kwargs`` (passed to the simulator's
constructor), ``max_episode_steps`` (simulator steps), ``reward_offset``
(subtracted from every simulator reward), ``n_envs`` / ``n_eval_envs`` and
``vec_env`` (``dummy`` | ``subproc``).
"""

from __future__ import annotations

import math
from functools import partial
from typing import Any, Callable, Mapping

import gymnasium as gym
import numpy as np
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecEnv

from dsrl.base_policies.normalization import Normalizer
from dsrl.envs.fetch import check_fetch_config, make_fetch_env
from dsrl.envs.pusht import check_pusht_config, make_pusht_env
from dsrl.envs.robomimic import check_robomimic_config, make_robomimic_env
from dsrl.envs.steering import SteeringEnv
from dsrl.envs.wrappers import ActionChunkWrapper, NormalizeWrapper
from dsrl.interrupts import ignoring_stop_signals


def make_gym_env(name: str, max_episode_steps: int, **kwargs: Any) -> gym.Env:
    return gym.make(name, max_episode_steps=max_episode_steps, **kwargs)


def make_steering_env(name: str, max_episode_steps: int, **kwargs: Any) -> gym.Env:
    return SteeringEnv(**kwargs)


def check_gym_name(name: str, kwargs: dict[str, Any]) -> None:
    try:
        gym.spec(name)
    except gym.error.Error as exc:
        raise ValueError(f"env.name={name!r} is not a registered gymnasium env ({exc})") from None


def check_steering_name(name: str, kwargs: dict[str, Any]) -> None:
    if name != "steering":
        raise ValueError(f"env.name={name!r}: the steering suite has one task, 'steering'")


SUITES: dict[str, tuple[Callable[..., gym.Env], Callable[[str, dict[str, Any]], None]]] = {
    "gym": (make_gym_env, check_gym_name),
    "robomimic": (make_robomimic_env, check_robomimic_config),
    "fetch": (make_fetch_env, check_fetch_config),
    "pusht": (make_pusht_env, check_pusht_config),
    "steering": (make_steering_env, check_steering_name),
}


def env_seeds(seed: int, n_envs: int) -> list[int]:
    """The reset seeds of a VecEnv of ``n_envs`` envs seeded with ``seed`` (a non-negative int).

    Each env's seed is drawn from its own child of ``np.random.SeedSequence(seed)``,
    so envs of different seeds share no stream. SB3's own rule, ``seed + k``
    for env ``k``, has run seed ``s``'s env ``k + 1`` replay run ``s + 1``'s env
    ``k``: two consecutive seeds with 25 evaluation envs share 24 of their 25
    evaluation streams.
    """
    if seed < 0:
        raise ValueError(f"seed={seed} must be non-negative")
    return [int(child.generate_state(1)[0]) for child in np.random.SeedSequence(seed).spawn(n_envs)]


class IndependentSeeds:
    """Mixin for an SB3 VecEnv whose ``seed(s)`` gives its envs :func:`env_seeds` instead of ``s + k``."""

    def seed(self, seed: int | None = None) -> list[int]:
        self._seeds = env_seeds(super().seed(seed)[0], self.num_envs)
        return self._seeds


class SeededDummyVecEnv(IndependentSeeds, DummyVecEnv):
    """SB3's DummyVecEnv with :class:`IndependentSeeds`."""


class SeededSubprocVecEnv(IndependentSeeds, SubprocVecEnv):
    """SB3's SubprocVecEnv with :class:`IndependentSeeds`."""


VEC_ENVS = {"dummy": SeededDummyVecEnv, "subproc": SeededSubprocVecEnv}


def check_env_config(env_cfg: Mapping[str, Any]) -> None:
    """Raise a ValueError naming the field for an unknown suite, task or vec_env, before anything is built."""
    suite = env_cfg.get("suite")
    if suite not in SUITES:
        raise ValueError(f"env.suite={suite!r} is not one of {sorted(SUITES)}")
    SUITES[suite][1](env_cfg.get("name"), dict(env_cfg.get("kwargs") or {}))
    if env_cfg.get("vec_env") not in VEC_ENVS:
        raise ValueError(f"env.vec_env={env_cfg.get('vec_env')!r} is not one of {sorted(VEC_ENVS)}")
    for key in ("max_episode_steps", "n_envs", "n_eval_envs"):
        if not isinstance(env_cfg.get(key), int) or env_cfg[key] < 1:
            raise ValueError(f"env.{key}={env_cfg.get(key)!r} must be a positive integer")


def make_simulator(env_cfg: Mapping[str, Any], render: bool = False) -> gym.Env:
    """The suite's simulator with ``env.kwargs`` (rendering offscreen with ``render``), unwrapped by us."""
    kwargs = dict(env_cfg.get("kwargs") or {}, **({"render_mode": "rgb_array"} if render else {}))
    return SUITES[env_cfg["suite"]][0](env_cfg["name"], env_cfg["max_episode_steps"], **kwargs)


def check_observations(env_cfg: Mapping[str, Any], base_cfg: Mapping[str, Any]) -> None:
    """Raise a ValueError, before training, when the env's observations do not fit the base policy's.

    Builds one simulator and compares its observation size with
    ``base_policy.obs_dim``, naming an image policy given state observations
    (or a state policy given images) as such.
    """
    sim = make_simulator(env_cfg)
    env_dim = int(math.prod(sim.observation_space.shape))
    sim.close()
    policy_dim, image_shape = int(base_cfg["obs_dim"]), base_cfg.get("image_shape")
    env_name = f"env.name={env_cfg['name']!r} with env.kwargs={dict(env_cfg.get('kwargs') or {})}"
    if image_shape and env_dim < math.prod(image_shape):
        raise ValueError(
            f"an image policy (base_policy.image_shape={list(image_shape)}) given state observations: {env_name} "
            f"observes {env_dim} numbers per step, fewer than one image"
        )
    if env_dim != policy_dim:
        kind = "an image policy" if image_shape else "a state policy (no base_policy.image_shape)"
        raise ValueError(
            f"{env_name} observes {env_dim} numbers per step, but base_policy.obs_dim={policy_dim} ({kind})"
        )


def make_env(
    env_cfg: Mapping[str, Any], normalizer: Normalizer, chunk: int, cond_steps: int, render: bool = False
) -> gym.Env:
    """One env: simulator (reward minus ``reward_offset``) -> NormalizeWrapper -> ActionChunkWrapper -> Monitor.

    With ``render`` the simulator renders offscreen and every step's info holds its ``frames``.
    """
    sim = make_simulator(env_cfg, render)
    offset = float(env_cfg.get("reward_offset", 0.0))
    if offset:
        sim = gym.wrappers.TransformReward(sim, lambda reward: reward - offset)
    env = NormalizeWrapper(sim, normalizer)
    env = ActionChunkWrapper(env, chunk, env_cfg["max_episode_steps"], cond_steps, record_frames=render)
    return Monitor(env)


def make_vec_env(
    env_cfg: Mapping[str, Any], normalizer: Normalizer, chunk: int, cond_steps: int, n_envs: int, render: bool = False
) -> VecEnv:
    """``n_envs`` copies of :func:`make_env` in the configured VecEnv (seed it with ``venv.seed``: :func:`env_seeds`).

    Rendering envs (``render``) always run in the learner's process; subprocess
    workers leave SIGINT and SIGTERM to it (see :mod:`dsrl.interrupts`).
    """
    check_env_config(env_cfg)
    env_cfg = dict(env_cfg)
    factory = partial(make_env, env_cfg, normalizer, chunk, cond_steps, render)
    vec_env = "dummy" if render else env_cfg["vec_env"]
    if vec_env == "subproc":
        factory = partial(ignoring_stop_signals, factory)
    return VEC_ENVS[vec_env]([factory] * n_envs)
