"""Offline transitions from a DPPO dataset (``train.npz``, see :mod:`dsrl.data.trajectories`),
cut into action chunks for DSRL-NA's replay buffer."""

from __future__ import annotations

import numpy as np
from stable_baselines3.common.buffers import ReplayBuffer

from dsrl.data.trajectories import action_chunks, load_dppo


def chunk_transitions(path: str, chunk: int, reward_offset: float = 0.0) -> dict[str, np.ndarray]:
    """One transition per dataset step: (obs, chunk of actions, summed reward, obs after the chunk, done).

    Chunks near a trajectory's end are padded with its last action; the
    reward sums the steps actually in the trajectory, each minus ``reward_offset``.
    """
    data = load_dppo(path)
    if data.images is not None:
        raise ValueError(
            f"train.load_offline_data: {path!r} holds images; offline transitions are made from datasets of "
            "flat observations only"
        )
    out: dict[str, list] = {"obs": [], "next_obs": [], "actions": [], "rewards": [], "dones": []}
    start = 0
    for length in data.traj_lengths:
        s, a = data.states[start : start + length], data.actions[start : start + length]
        r, d = data.rewards[start : start + length] - reward_offset, data.terminals[start : start + length]
        chunks = action_chunks(a, chunk).reshape(length, -1)
        for t in range(length):
            end = min(t + chunk, length)
            out["obs"].append(s[t])
            out["next_obs"].append(s[min(end, length - 1)])
            out["actions"].append(chunks[t])
            out["rewards"].append(r[t:end].sum())
            out["dones"].append(d[t:end].any())
        start += length
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
