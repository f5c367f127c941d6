"""A replay buffer that also stores, per transition, one noise-critic distillation pair.

DSRL-NA distils Q_W(s, w) from Q_A(s, π_dp(s, w)) with w ~ N(0, I) clipped to
±action_magnitude. The base policy π_dp is frozen, so for a stored
observation s and a drawn w the chunk π_dp(s, w) never changes: it can be
denoised once, in large batches, when the transition arrives, instead of a
fresh batch of 256 on every distillation step. Each observation keeps its
one draw of w; over a buffer of many observations the pairs sample the same
distribution as fresh draws.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from stable_baselines3.common.buffers import ReplayBuffer


class DistillationReplayBuffer(ReplayBuffer):
    """SB3's :class:`ReplayBuffer` with ``distill_noise`` and ``distill_actions`` per row and env slot.

    ``distill_actions`` has the shape of ``actions``: (buffer_size, n_envs,
    chunk * action_dim); ``distill_noise`` is (buffer_size, n_envs, noise_dim),
    unscaled (in ±action_magnitude). Rows added since the last
    :meth:`set_pairs` are listed by :meth:`unpaired_rows`.

    :param noise_dim: dimension of the agent's noise (None: that of the actions)
    (other parameters: SB3's :class:`ReplayBuffer`)
    """

    def __init__(self, *args: Any, noise_dim: int | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.distill_noise = np.zeros(self.actions.shape[:2] + (noise_dim or self.action_dim,), self.actions.dtype)
        self.distill_actions = np.zeros_like(self.actions)
        self.rows_added = 0
        self.rows_paired = 0

    def add(self, *args: Any, **kwargs: Any) -> None:
        super().add(*args, **kwargs)
        self.rows_added += 1

    def unpaired_rows(self) -> np.ndarray:
        """Row indices added since the last :meth:`set_pairs`, oldest first (at most the whole buffer)."""
        pending = min(self.rows_added - self.rows_paired, self.buffer_size)
        return (self.pos - pending + np.arange(pending)) % self.buffer_size

    def set_pairs(self, rows: np.ndarray, noise: np.ndarray, actions: np.ndarray) -> None:
        """Store the pairs of ``rows``: noise (len(rows), n_envs, noise_dim), chunks (.., chunk_dim)."""
        self.distill_noise[rows] = noise
        self.distill_actions[rows] = actions
        self.rows_paired = self.rows_added

    def sample_pairs(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Observations (B, obs_dim), unscaled noise (B, noise_dim) and chunks (B, chunk_dim) of random transitions."""
        upper = self.buffer_size if self.full else self.pos
        rows = np.random.randint(0, upper, size=batch_size)
        slots = np.random.randint(0, self.n_envs, size=batch_size)
        arrays = (self.observations, self.distill_noise, self.distill_actions)
        return tuple(self.to_torch(a[rows, slots].astype(np.float32, copy=False)) for a in arrays)
