"""Offline transitions from a DPPO dataset (``train.npz``, see :mod:`dsrl.data.trajectories`),
cut into action chunks for DSRL-NA's replay buffer, observed as the agent observes the env (states, or the
base policy's features of states and images)."""

from __future__ import annotations

import logging

import numpy as np
import torch
from stable_baselines3.common.buffers import ReplayBuffer

from dsrl.base_policies.base import NoisePolicy
from dsrl.base_policies.normalization import Normalizer
from dsrl.data.observation_histories import ObservationHistories
from dsrl.data.trajectories import Trajectories, action_chunks, load_dppo_in_units
from dsrl.envs.embedding_env import embed

log = logging.getLogger(__name__)

EMBED_BATCH = 1024  # dataset steps whose full observations are built and encoded at once (1024 PushT images: 113 MB)


def load_in_policy_bounds(path: str, normalizer: Normalizer) -> Trajectories:
    """A DPPO dataset normalised with the base policy's bounds, whatever bounds it was saved with.

    The ``normalization.npz`` beside ``path`` takes it back to simulator units and ``normalizer`` normalises it
    again (images stay as stored), so a dataset with its own fitted bounds (another expert's, a regenerated one)
    is observed as the env's wrappers would observe the same states. Values beyond the base policy's bounds stay
    beyond [-1, 1]; their share is logged.

    :param path: the dataset's ``train.npz`` (``train.load_offline_data``)
    :param normalizer: the base policy's bounds
    """
    data, own = load_dppo_in_units(path)
    own.require_dims(normalizer.obs_dim, normalizer.action_dim, f"train.load_offline_data's bounds beside {path!r}")
    data.states = normalizer.obs_columns(data.n_pixels).normalize_obs(data.states)
    data.actions = normalizer.normalize_action(data.actions)
    if not own.matches(normalizer):
        log.info(
            "train.load_offline_data: %r re-normalised with the base policy's bounds; %.2f%% of state and %.2f%% "
            "of action values fall outside [-1, 1]",
            path,
            100 * np.mean(np.abs(data.states) > 1),
            100 * np.mean(np.abs(data.actions) > 1),
        )
    return data


def agent_observations(data: Trajectories, normalizer: Normalizer, policy: NoisePolicy | None = None) -> np.ndarray:
    """What the agent observes at each dataset step: (N, agent_obs_dim) float32.

    :param data: the dataset (states normalised, images as stored)
    :param normalizer: the base policy's bounds, whose pixel bounds normalise the images
    :param policy: the base policy whose conditioning features the agent observes (``train.agent_obs:
        policy_embedding``): each step's full observation ([pixels, state] for image datasets) is built and
        encoded in batches; None: the agent observes the normalised states (datasets without images only)
    """
    if policy is None:
        if data.images is not None:
            raise ValueError(
                "train.load_offline_data: the dataset holds images; the agent observes them only as the base "
                "policy's features (train.agent_obs=policy_embedding)"
            )
        return data.states
    histories = ObservationHistories(data, np.arange(len(data.states))[:, None], normalizer)
    batches = torch.arange(len(histories)).split(EMBED_BATCH)
    return np.concatenate([embed(policy, histories[steps].numpy()) for steps in batches])


def chunk_transitions(
    data: Trajectories, step_obs: np.ndarray, chunk: int, reward_offset: float = 0.0
) -> dict[str, np.ndarray]:
    """One transition per dataset step: (obs, chunk of actions, summed reward, obs after the chunk, done).

    Chunks near a trajectory's end are padded with its last action; the
    reward sums the steps actually in the trajectory, each minus ``reward_offset``.

    :param data: the dataset
    :param step_obs: (N, agent_obs_dim) what the agent observes at each dataset step (:func:`agent_observations`)
    :param chunk: actions per transition (the base policy's horizon_steps)
    :param reward_offset: subtracted from every dataset reward (``env.reward_offset``)
    """
    out: dict[str, list] = {"obs": [], "next_obs": [], "actions": [], "rewards": [], "dones": []}
    start = 0
    for length in data.traj_lengths:
        a = data.actions[start : start + length]
        r, d = data.rewards[start : start + length] - reward_offset, data.terminals[start : start + length]
        chunks = action_chunks(a, chunk).reshape(length, -1)
        for t in range(length):
            end = min(t + chunk, length)
            out["obs"].append(start + t)
            out["next_obs"].append(start + min(end, length - 1))
            out["actions"].append(chunks[t])
            out["rewards"].append(r[t:end].sum())
            out["dones"].append(d[t:end].any())
        start += length
    out["obs"], out["next_obs"] = step_obs[out["obs"]], step_obs[out["next_obs"]]
    return {k: np.asarray(v, dtype=np.float32) for k, v in out.items()}


def add_to_replay_buffer(buffer: ReplayBuffer, transitions: dict[str, np.ndarray]) -> int:
    """Write transitions into ``buffer`` row by row across its env slots; returns how many were added.

    The last ``len % n_envs`` transitions are left out, since a buffer row
    holds one transition per env slot.
    """
    n_envs = buffer.n_envs
    rows = len(transitions["obs"]) // n_envs
    if rows > buffer.buffer_size - buffer.pos:
        raise ValueError(
            f"offline data needs {rows} buffer rows but the replay buffer has {buffer.buffer_size - buffer.pos} free"
        )
    for row in range(rows):
        part = slice(row * n_envs, (row + 1) * n_envs)
        buffer.add(
            transitions["obs"][part],
            transitions["next_obs"][part],
            transitions["actions"][part],
            transitions["rewards"][part],
            transitions["dones"][part],
            [{} for _ in range(n_envs)],
        )
    return rows * n_envs
