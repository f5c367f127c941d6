"""Running a scripted expert until enough episodes succeed, so that a stopped collection continues.

Episode ``i`` of a collection with seed ``s`` starts from ``env.reset(seed=s * 1_000_003 + i)``; the
expert draws its noise and styles from one generator across episodes. Given a ``work_dir``, every
successful episode is written there (``episode_<k>.pkl.gz``) and, after each attempt, ``progress.json``
records the attempts made and the generator's state. A collection stopped at any moment (Ctrl-C, a
kill) therefore continues from its last finished attempt when called again with the same
``work_dir``, and ends with the same episodes as one never stopped.
"""

from __future__ import annotations

import gzip
import json
import os
import pickle
from typing import Any, Callable

import numpy as np
from tqdm import tqdm

from dsrl.files import write_atomic, write_json
from dsrl.settings import first_difference

PROGRESS = "progress.json"


def episode_seed(seed: int, attempt: int) -> int:
    """The reset seed of attempt ``attempt`` (0-based) of a collection seeded ``seed``."""
    return seed * 1_000_003 + attempt


def _episode_path(work_dir: str, index: int) -> str:
    return os.path.join(work_dir, f"episode_{index:05d}.pkl.gz")


def _write_episode(path: str, episode: Any) -> None:
    def write(tmp: str) -> None:
        with gzip.open(tmp, "wb", compresslevel=1) as f:
            pickle.dump(episode, f)

    write_atomic(path, write)


def _read_episode(path: str) -> Any:
    with gzip.open(path, "rb") as f:
        return pickle.load(f)


def _load_progress(work_dir: str, settings: dict[str, Any]) -> tuple[list[Any], int, dict | None]:
    """Episodes, attempts and generator state saved in ``work_dir`` (none yet: ``[], 0, None``)."""
    path = os.path.join(work_dir, PROGRESS)
    if not os.path.isfile(path):
        return [], 0, None
    with open(path) as f:
        progress = json.load(f)
    difference = first_difference(progress["settings"], settings)
    if difference:
        key, before, now = difference
        raise ValueError(
            f"{work_dir!r} holds a collection made with {key}={before!r}, not {now!r}: "
            "use the same settings to continue it, or delete the folder to start again"
        )
    episodes = [_read_episode(_episode_path(work_dir, k)) for k in range(progress["successes"])]
    return episodes, progress["attempts"], progress["rng"]


def collect_until_successes(
    attempt: Callable[[int], tuple[Any, bool]],
    n_demos: int,
    seed: int,
    rng: np.random.Generator,
    work_dir: str | None = None,
    settings: dict[str, Any] | None = None,
) -> tuple[list[Any], int]:
    """Call ``attempt(episode_seed(seed, i))`` for i = 0, 1, ... until ``n_demos`` episodes succeed.

    :param attempt: runs one episode from the given reset seed; returns it and whether it succeeded
    :param n_demos: successful episodes wanted
    :param seed: the collection's seed (see :func:`episode_seed`)
    :param rng: the expert's generator (its state is saved with the progress and restored from it)
    :param work_dir: where successes and progress are kept, and read back from when the collection was
        stopped earlier (None: nothing is kept)
    :param settings: what made the episodes (e.g. task, noise, observation type), JSON values; a
        collection continues only with the same ones (``n_demos`` may change)
    :return: the successful episodes in order, and the number of attempts
    """
    settings = dict(settings or {}, seed=seed)
    episodes, attempts = [], 0
    if work_dir is not None:
        os.makedirs(work_dir, exist_ok=True)
        episodes, attempts, rng_state = _load_progress(work_dir, settings)
        if rng_state is not None:
            rng.bit_generator.state = rng_state
            print(f"continuing the collection in {work_dir}: {len(episodes)} successes in {attempts} attempts")
    with tqdm(total=n_demos, initial=min(len(episodes), n_demos), desc="demos") as bar:
        while len(episodes) < n_demos:
            try:
                episode, success = attempt(episode_seed(seed, attempts))
            except KeyboardInterrupt:
                if work_dir is not None:
                    print(f"\nstopped: {len(episodes)} successes in {attempts} attempts kept in {work_dir}")
                raise
            attempts += 1
            if success:
                if work_dir is not None:
                    _write_episode(_episode_path(work_dir, len(episodes)), episode)
                episodes.append(episode)
                bar.update()
            if work_dir is not None:
                progress = dict(settings=settings, attempts=attempts, successes=len(episodes))
                write_json(os.path.join(work_dir, PROGRESS), dict(progress, rng=rng.bit_generator.state))
    return episodes[:n_demos], attempts
