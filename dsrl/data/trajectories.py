"""Trajectory datasets in DPPO's npz format.

A dataset directory holds ``train.npz`` with ``states`` (N, obs_dim) and
``actions`` (N, action_dim) normalised to [-1, 1], ``rewards`` (N,),
``terminals`` (N,) and ``traj_lengths`` (n_traj,) summing to N, plus the
``normalization.npz`` that maps them back (see
:mod:`dsrl.base_policies.normalization`). DPPO's own datasets load unchanged.

Image datasets (observations that start with an image's pixels, see
:mod:`dsrl.envs.pusht`) hold the pixels as DPPO's image datasets do:
``images`` (N, C, H, W) uint8, in [0, 255] and not normalised, with
``states`` (N, obs_dim - C * H * W) the rest of each observation. A full
observation is ``[images[i].ravel(), states[i]]``; the normalisation file
covers all of it, the pixels with the bounds [0, 255]. Stored this way, a
dataset of 96x96 images takes a quarter of the memory of float observations.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import gymnasium as gym
import numpy as np

from dsrl.base_policies.normalization import Normalizer
from dsrl.data.collection import collect_until_successes
from dsrl.files import write_atomic
from dsrl.npz_files import read_arrays

KEYS = ("states", "actions", "rewards", "terminals", "traj_lengths")
PIXEL_RANGE = (0.0, 255.0)


@dataclass
class Trajectories:
    """Concatenated trajectories, in simulator units or normalised (see where they came from).

    ``images`` (N, C, H, W) uint8, when present, are the first C * H * W
    numbers of each observation and ``states`` the rest; they are never normalised.
    """

    states: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    terminals: np.ndarray
    traj_lengths: np.ndarray
    images: np.ndarray | None = None

    def validate(self, source: str) -> "Trajectories":
        """Raise a ValueError naming ``source`` and the key for mismatched lengths, non-finite values or
        images that are not (N, C, H, W) uint8."""
        total = int(self.traj_lengths.sum())
        keys = ("states", "actions", "rewards", "terminals") + (("images",) if self.images is not None else ())
        for key in keys:
            if len(getattr(self, key)) != total:
                raise ValueError(f"{source}: {key} has {len(getattr(self, key))} rows, traj_lengths sum to {total}")
        if self.images is not None and (self.images.dtype != np.uint8 or self.images.ndim != 4):
            raise ValueError(
                f"{source}: images must be (N, C, H, W) uint8, not {self.images.dtype} of shape {self.images.shape}"
            )
        for key in ("states", "actions", "rewards"):
            bad = ~np.isfinite(getattr(self, key))
            if bad.any():
                row = int(np.argwhere(bad)[0][0])
                raise ValueError(f"{source}: {key} has a non-finite value at row {row}")
        return self

    @property
    def n_trajectories(self) -> int:
        return len(self.traj_lengths)

    @property
    def n_pixels(self) -> int:
        """C * H * W of the images (0 without images): the observation columns they take."""
        return 0 if self.images is None else int(np.prod(self.images.shape[1:]))

    def fit_normalizer(self) -> Normalizer:
        """Bounds of the data, the pixels' set to [0, 255] rather than fitted."""
        fitted = Normalizer.fit(self.states, self.actions)
        pixel_min, pixel_max = (np.full(self.n_pixels, bound, np.float32) for bound in PIXEL_RANGE)
        return Normalizer(
            np.concatenate([pixel_min, fitted.obs_min]),
            np.concatenate([pixel_max, fitted.obs_max]),
            fitted.action_min,
            fitted.action_max,
        )

    def save_dppo(self, directory: str, normalizer: Normalizer | None = None) -> Normalizer:
        """Write ``train.npz`` (normalised, images as they are) and ``normalization.npz``; bounds from
        :meth:`fit_normalizer` unless given."""
        os.makedirs(directory, exist_ok=True)
        normalizer = normalizer or self.fit_normalizer()
        images = {} if self.images is None else {"images": self.images}
        arrays = dict(
            states=normalizer.obs_columns(self.n_pixels).normalize_obs(self.states),
            actions=normalizer.normalize_action(self.actions),
            rewards=self.rewards.astype(np.float32),
            terminals=self.terminals.astype(bool),
            traj_lengths=self.traj_lengths.astype(np.int64),
            **images,
        )
        write_atomic(os.path.join(directory, "train.npz"), lambda tmp: np.savez_compressed(tmp, **arrays))
        normalizer.save(os.path.join(directory, "normalization.npz"))
        return normalizer


def load_dppo(path: str) -> Trajectories:
    """Read a DPPO ``train.npz`` (normalised data; images, if any, as stored) and check it."""
    data = read_arrays(path, KEYS, "dataset", optional=("images",))
    trajectories = Trajectories(
        states=data["states"].astype(np.float32),
        actions=data["actions"].astype(np.float32),
        rewards=data["rewards"].astype(np.float32),
        terminals=data["terminals"].astype(bool),
        traj_lengths=data["traj_lengths"].astype(np.int64),
        images=data.get("images"),
    )
    return trajectories.validate(path)


def load_dppo_in_units(path: str) -> tuple[Trajectories, Normalizer]:
    """A DPPO ``train.npz`` in simulator units (images as stored), and the bounds of the ``normalization.npz``
    beside it that it was normalised with."""
    bounds_path = os.path.join(os.path.dirname(path), "normalization.npz")
    own = Normalizer.load(bounds_path)
    data = load_dppo(path)
    own.require_dims(data.n_pixels + data.states.shape[1], data.actions.shape[1], repr(bounds_path), repr(path))
    data.states = own.obs_columns(data.n_pixels).unnormalize_obs(data.states)
    data.actions = own.unnormalize_action(data.actions)
    return data, own


def join_dppo(directories: list[str]) -> tuple[Trajectories, Normalizer]:
    """Datasets (directories with ``train.npz`` + ``normalization.npz``) joined in order, in simulator units.

    The returned bounds are the union of the datasets' own, so bounds set rather than fitted (the pixels'
    [0, 255]) are kept. Observation and action sizes must agree.
    """
    parts, normalizer = [], None
    for directory in directories:
        data, own = load_dppo_in_units(os.path.join(directory, "train.npz"))
        if normalizer is not None and (own.obs_dim, own.action_dim) != (normalizer.obs_dim, normalizer.action_dim):
            raise ValueError(
                f"{directory!r} has obs_dim {own.obs_dim} and action_dim {own.action_dim}, "
                f"{directories[0]!r} has {normalizer.obs_dim} and {normalizer.action_dim}"
            )
        normalizer = own if normalizer is None else normalizer.union(own)
        if parts and data.n_pixels != parts[0].n_pixels:
            raise ValueError(
                f"{directory!r} has {data.n_pixels} image pixels per observation, {directories[0]!r} has "
                f"{parts[0].n_pixels}"
            )
        parts.append(data)
    keys = KEYS + (("images",) if parts[0].images is not None else ())
    joined = Trajectories(**{key: np.concatenate([getattr(part, key) for part in parts]) for key in keys})
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
    image_shape: Sequence[int] | None = None,
) -> tuple[Trajectories, int]:
    """Episodes of a scripted expert (``act``: observation -> action) until ``n_demos`` succeed (``is_success``).

    :param reset: called before each episode (the expert's new style)
    :param rng: the expert's generator
    :param label: the action recorded per step, as in :func:`record_episode`
    :param work_dir: keeps the collection so that a stopped one continues, with ``settings``
        (see :func:`dsrl.data.collection.collect_until_successes`)
    :param image_shape: (C, H, W) of the image whose pixels start each observation, kept as uint8 images
        (see :func:`split_images`); None for observations without an image
    :return: the successful episodes (simulator units) and the number of attempts
    """

    def attempt(episode_seed: int) -> tuple[dict[str, np.ndarray], bool]:
        reset()
        steps, info, _ = record_episode(env, act, episode_seed, max_steps, label)
        return split_images(steps, image_shape), bool(info.get("is_success"))

    episodes, attempts = collect_until_successes(attempt, n_demos, seed, rng, work_dir, settings)
    return concatenate(episodes), attempts


def split_images(steps: dict[str, np.ndarray], image_shape: Sequence[int] | None) -> dict[str, np.ndarray]:
    """An episode's ``states`` (L, obs_dim) whose first C * H * W numbers are pixels in [0, 255], as
    ``images`` (L, C, H, W) uint8 and ``states`` (L, obs_dim - C * H * W); unchanged if ``image_shape`` is None."""
    if image_shape is None:
        return steps
    pixels = math.prod(image_shape)
    states = steps["states"]
    return dict(steps, images=states[:, :pixels].astype(np.uint8).reshape(-1, *image_shape), states=states[:, pixels:])


def concatenate(episodes: list[dict[str, np.ndarray]]) -> Trajectories:
    """Join per-episode dicts (``states``, ``actions``, ``rewards``, ``terminals``, ``images`` if any) into one
    dataset."""
    return Trajectories(
        states=np.concatenate([e["states"] for e in episodes]).astype(np.float32),
        actions=np.concatenate([e["actions"] for e in episodes]).astype(np.float32),
        rewards=np.concatenate([e["rewards"] for e in episodes]).astype(np.float32),
        terminals=np.concatenate([e["terminals"] for e in episodes]).astype(bool),
        traj_lengths=np.array([len(e["actions"]) for e in episodes], dtype=np.int64),
        images=np.concatenate([e["images"] for e in episodes]) if "images" in episodes[0] else None,
    )


def action_chunks(actions: np.ndarray, chunk: int) -> np.ndarray:
    """The chunk starting at each step of one trajectory: (L, action_dim) -> (L, chunk, action_dim).

    Chunks running past the trajectory's end repeat its last action.
    """
    padded = np.concatenate([actions, np.repeat(actions[-1:], chunk - 1, axis=0)])
    return np.stack([padded[t : t + chunk] for t in range(len(actions))])


def chunk_pairs(trajectories: Trajectories, chunk: int, cond_steps: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Behaviour-cloning pairs, one per step: the rows of its observation history and the action chunk that follows.

    Rows rather than observations, so that each observation is held once
    (see :class:`dsrl.data.observation_histories.ObservationHistories`).

    :return: history rows (N, cond_steps) into the dataset, oldest first, the
        trajectory's first row repeated before its start; chunks (N, chunk,
        action_dim), padded with the trajectory's last action at its end
    """
    rows_out, chunk_out, start = [], [], 0
    for length in trajectories.traj_lengths:
        history = start + np.arange(length)[:, None] + np.arange(1 - cond_steps, 1)[None, :]
        rows_out.append(np.maximum(history, start))
        chunk_out.append(action_chunks(trajectories.actions[start : start + length], chunk))
        start += length
    return np.concatenate(rows_out).astype(np.int64), np.concatenate(chunk_out).astype(np.float32)
