"""Observation/action normalisation from DPPO's ``normalization.npz``.

The file holds ``obs_min``, ``obs_max`` (obs_dim,) and ``action_min``,
``action_max`` (action_dim,). Observations map to [-1, 1] as
``2 * ((obs - min) / (max - min + 1e-6) - 0.5)``; policy actions in [-1, 1]
map back to simulator units as ``(a + 1) / 2 * (max - min) + min``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dsrl.files import write_atomic
from dsrl.npz_files import read_arrays

REQUIRED_ARRAYS = ("obs_min", "obs_max", "action_min", "action_max")
EPS = 1e-6


def scale_to_unit(x, low, high):
    """Values in [low, high] -> [-1, 1] as ``2 * ((x - low) / (high - low + EPS) - 0.5)``, elementwise.

    ``x``, ``low`` and ``high`` are numpy arrays or torch tensors alike (the same expression serves the env's
    observations and a behaviour-cloning batch on the training device).
    """
    return 2 * ((x - low) / (high - low + EPS) - 0.5)


@dataclass(frozen=True)
class Normalizer:
    """Min/max bounds of observations and actions, in simulator units."""

    obs_min: np.ndarray
    obs_max: np.ndarray
    action_min: np.ndarray
    action_max: np.ndarray

    @property
    def obs_dim(self) -> int:
        return self.obs_min.shape[0]

    @property
    def action_dim(self) -> int:
        return self.action_min.shape[0]

    @classmethod
    def load(cls, path: str) -> "Normalizer":
        """Read a normalisation file; a missing file or array raises an error naming it."""
        raw = read_arrays(path, REQUIRED_ARRAYS, "normalization file")
        arrays = {k: v.astype(np.float32).reshape(-1) for k, v in raw.items()}
        for kind in ("obs", "action"):
            lo, hi = arrays[f"{kind}_min"], arrays[f"{kind}_max"]
            if lo.shape != hi.shape:
                raise ValueError(f"normalization file {path!r}: {kind}_min has shape {lo.shape}, {kind}_max {hi.shape}")
        return cls(**arrays)

    @classmethod
    def fit(cls, obs: np.ndarray, actions: np.ndarray) -> "Normalizer":
        """Bounds of a dataset: obs (N, obs_dim), actions (N, action_dim)."""
        return cls(
            obs.min(0).astype(np.float32),
            obs.max(0).astype(np.float32),
            actions.min(0).astype(np.float32),
            actions.max(0).astype(np.float32),
        )

    def obs_columns(self, start: int) -> "Normalizer":
        """The bounds of observation columns ``start:`` (and of all actions)."""
        return Normalizer(self.obs_min[start:], self.obs_max[start:], self.action_min, self.action_max)

    def require_dims(self, obs_dim: int, action_dim: int, source: str, wanted_by: str = "base_policy") -> None:
        """Raise a ValueError naming ``source`` and ``wanted_by`` (what has those dims) when the bounds are not
        for (obs_dim, action_dim)."""
        for kind, have, want in (("obs", self.obs_dim, obs_dim), ("action", self.action_dim, action_dim)):
            if have != want:
                raise ValueError(f"{source} has {kind}_min of {have} dims, but {wanted_by} has {kind}_dim={want}")

    def matches(self, other: "Normalizer") -> bool:
        """Whether both hold the same bounds (to float32 precision)."""
        return all(
            getattr(self, k).shape == getattr(other, k).shape and np.allclose(getattr(self, k), getattr(other, k))
            for k in REQUIRED_ARRAYS
        )

    def save(self, path: str) -> None:
        write_atomic(path, lambda tmp: np.savez(tmp, **{k: getattr(self, k) for k in REQUIRED_ARRAYS}))

    def normalize_obs(self, obs: np.ndarray) -> np.ndarray:
        return scale_to_unit(obs, self.obs_min, self.obs_max).astype(np.float32)

    def normalize_action(self, action: np.ndarray) -> np.ndarray:
        return scale_to_unit(action, self.action_min, self.action_max).astype(np.float32)

    def unnormalize_obs(self, obs: np.ndarray) -> np.ndarray:
        """The inverse of :meth:`normalize_obs` (simulator units, float32)."""
        return ((obs / 2 + 0.5) * (self.obs_max - self.obs_min + EPS) + self.obs_min).astype(np.float32)

    def union(self, other: "Normalizer") -> "Normalizer":
        """Bounds covering both: what :meth:`fit` gives for two datasets joined."""
        return Normalizer(
            np.minimum(self.obs_min, other.obs_min),
            np.maximum(self.obs_max, other.obs_max),
            np.minimum(self.action_min, other.action_min),
            np.maximum(self.action_max, other.action_max),
        )

    def unnormalize_action(self, action: np.ndarray) -> np.ndarray:
        return (action + 1) / 2 * (self.action_max - self.action_min) + self.action_min
