"""Trajectory datasets in DPPO's npz format.

A dataset directory holds ``train.npz`` with ``states`` (N, obs_dim) and
``actions`` (N, action_dim) normalised to [-1, 1], ``rewards`` (N,),
``terminals`` (N,) and ``traj_lengths`` (n_traj,) summing to N, plus the
``normalization.npz`` that maps them back (see
:mod:`dsrl.base_policies.normalization`). DPPO's own datasets load unchanged.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable

import gymnasium as gym
import numpy as np

from dsrl.base_policies.normalization import Normalizer
from dsrl.data.collection import collect_until_successes
from dsrl.npz_files import read_arrays

KEYS = ("states", "actions", "rewards", "terminals", "traj_lengths")


@dataclass
class Trajectories:
    """Concatenated trajectories, in simulator units or normalised (see where they came from)."""

    states: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    terminals: np.ndarray
    traj_lengths: np.ndarray

    def validate(self, source: str) -> "Trajectories":
        """Raise a ValueError naming ``source`` and the key for mismatched lengths or non-finite values."""
        total = int(self.traj_lengths.sum())
        for key in ("states", "actions", "rewards", "terminals"):
            if len(getattr(self, key)) != total:
                raise ValueError(f"{source}: {key} has {len(getattr(self, key))} rows, traj_lengths sum to {total}")
        for key in ("states", "actions", "rewards"):
            bad = ~np.isfinite(getattr(self, key))
            if bad.any():
                row = int(np.argwhere(bad)[0][0])
                raise ValueError(f"{source}: {key} has a non-finite value at row {row}")
        return self

    @property
    def n_trajectories(self) -> int:
        return len(self.traj_lengths)

    def save_dppo(self, directory: str, normalizer: Normalizer | None = None) -> Normalizer:
        """Write ``train.npz`` (normalised) and ``normalization.npz``; bounds fitted to the data unless given."""
        os.makedirs(directory, exist_ok=True)
        normalizer = normalizer or Normalizer.fit(self.states, self.actions)
        np.savez_compressed(
            os.path.join(directory, "train.npz"),
            states=normalizer.normalize_obs(self.states),
            actions=normalizer.normalize_action(self.actions),
            rewards=self.rewards.astype(np.float32),
            terminals=self.terminals.astype(bool),
            traj_lengths=self.traj_lengths.astype(np.int64),
        )
        normalizer.save(os.path.join(directory, "normalization.npz"))
        return normalizer


def load_dppo(path: str) -> Trajectories:
    """Read a DPPO ``train.npz`` (normalised data) and check it."""
    data = read_arrays(path, KEYS, "dataset")
    trajectories = Trajectories(
        states=data["states"].astype(np.float32),
        actions=data["actions"].astype(np.float32),
        rewards=data["rewards"].astype(np.float32),
        terminals=data["terminals"].astype(bool),
        traj_lengths=data["traj_lengths"].astype(np.int64),
    )
    return trajectories.validate(path)


def join_dppo(directories: list[str]) -> tuple[Trajectories, Normalizer]:
    """Datasets (directories with ``train.npz`` + ``normalization.npz``) joined in order, in simulator units.

    The returned bounds are the union of the datasets' own, so bounds set rather than fitted (the pixels'
    [0, 255]) are kept. Observation and action sizes must agree.
    """
    parts, normalizer = [], None
    for directory in directories:
        own = Normalizer.load(os.path.join(directory, "normalization.npz"))
        if normalizer is not None and (own.obs_dim, own.action_dim) != (normalizer.obs_dim, normalizer.action_dim):
            raise ValueError(
                f"{directory!r} has obs_dim {own.obs_dim} and action_dim {own.action_dim}, "
                f"{directories[0]!r} has {normalizer.obs_dim} and {normalizer.action_dim}"
            )
        normalizer = own if normalizer is None else normalizer.union(own)
        data = load_dppo(os.path.join(directory, "train.npz"))
        parts.append(
            dict(
                states=own.unnormalize_obs(data.states),
                actions=own.unnormalize_action(data.actions),
                rewards=data.rewards,
                terminals=data.terminals,
                traj_lengths=data.traj_lengths,
            )
        )
    joined = Trajectories(**{key: np.concatenate([part[key] for part in parts]) for key in KEYS})
    return joined.validate(" + ".join(directories)), normalizer


def record_episode(
    env: gym.Env,
    act: Callable[[np.ndarray], np.ndarray],
    seed: int,
    max_steps: int,
    label: Callable[[], np.ndarray] | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, Any], bool]:
    """Run ``act`` (observation -> action) from ``env.reset(seed=seed)`` for at most ``max_steps`` steps.

    :param label: the action to record for the step ``act`` just chose, when it differs from the executed
        one (an expert acting with noise but recording its noise-free action, as in DART); default: the
        executed action

    :return: the episode (``states``, ``actions``, ``rewards``, ``terminals``,
        one row per step), the last step's info, and whether the episode ended
        (terminated or truncated) within ``max_steps``
    """
    obs, info = env.reset(seed=seed)
    steps: dict[str, list] = {"states": [], "actions": [], "rewards": [], "terminals": []}
    done = False
    while not done and len(steps["actions"]) < max_steps:
        action = act(obs)
        recorded = action if label is None else label()
        next_obs, reward, terminated, truncated, info = env.step(action)
        for key, value in zip(steps, (obs, recorded, reward, terminated)):
            steps[key].append(value)
        obs, done = next_obs, terminated or truncated
    return {k: np.asarray(v) for k, v in steps.items()}, info, done


def collect_successes(
    env: gym.Env,
    act: Callable[[np.ndarray], np.ndarray],
    n_demos: int,
    seed: int,
    max_steps: int,
    reset: Callable[[], None],
    rng: np.random.Generator,
    label: Callable[[], np.ndarray] | None = None,
    work_dir: str | None = None,
    settings: dict[str, Any] | None = None,
) -> tuple[Trajectories, int]:
    """Episodes of a scripted expert (``act``: observation -> action) until ``n_demos`` succeed (``is_success``).

    :param reset: called before each episode (the expert's new style)
    :param rng: the expert's generator
    :param label: the action recorded per step, as in :func:`record_episode`
    :param work_dir: keeps the collection so that a stopped one continues, with ``settings``
        (see :func:`dsrl.data.collection.collect_until_successes`)
    :return: the successful episodes (simulator units) and the number of attempts
    """

    def attempt(episode_seed: int) -> tuple[dict[str, np.ndarray], bool]:
        reset()
        steps, info, _ = record_episode(env, act, episode_seed, max_steps, label)
        return steps, bool(info.get("is_success"))

    episodes, attempts = collect_until_successes(attempt, n_demos, seed, rng, work_dir, settings)
    return concatenate(episodes), attempts


def concatenate(episodes: list[dict[str, np.ndarray]]) -> Trajectories:
    """Join per-episode dicts (``states``, ``actions``, ``rewards``, ``terminals``) into one dataset."""
    return Trajectories(
        states=np.concatenate([e["states"] for e in episodes]).astype(np.float32),
        actions=np.concatenate([e["actions"] for e in episodes]).astype(np.float32),
        rewards=np.concatenate([e["rewards"] for e in episodes]).astype(np.float32),
        terminals=np.concatenate([e["terminals"] for e in episodes]).astype(bool),
        traj_lengths=np.array([len(e["actions"]) for e in episodes], dtype=np.int64),
    )


def action_chunks(actions: np.ndarray, chunk: int) -> np.ndarray:
    """The chunk starting at each step of one trajectory: (L, action_dim) -> (L, chunk, action_dim).

    Chunks running past the trajectory's end repeat its last action.
    """
    padded = np.concatenate([actions, np.repeat(actions[-1:], chunk - 1, axis=0)])
    return np.stack([padded[t : t + chunk] for t in range(len(actions))])


def chunk_pairs(trajectories: Trajectories, chunk: int, cond_steps: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Behaviour-cloning pairs, one per step: observation history and the action chunk that follows.

    :return: obs (N, cond_steps * obs_dim), oldest first, the first state
        repeated before a trajectory's start; chunks (N, chunk, action_dim),
        padded with the trajectory's last action at its end
    """
    obs_out, chunk_out, start = [], [], 0
    for length in trajectories.traj_lengths:
        states = trajectories.states[start : start + length]
        actions = trajectories.actions[start : start + length]
        padded_states = np.concatenate([np.repeat(states[:1], cond_steps - 1, axis=0), states])
        obs_out.extend(padded_states[t : t + cond_steps].reshape(-1) for t in range(length))
        chunk_out.extend(action_chunks(actions, chunk))
        start += length
    return np.asarray(obs_out, np.float32), np.asarray(chunk_out, np.float32)
