"""Normalised observations (and histories of them) gathered from a dataset's rows, images included."""

from __future__ import annotations

import numpy as np
import torch

from dsrl.base_policies.normalization import Normalizer, scale_to_unit
from dsrl.data.trajectories import Trajectories


class ObservationHistories:
    """The flat, normalised observation histories of dataset rows, gathered when a batch is drawn.

    Behaviour cloning gathers each pair's history (:mod:`dsrl.pretrain`);
    offline transitions gather each step alone (:mod:`dsrl.data.offline`).

    Each dataset row is held once, its image as uint8, however many histories
    it belongs to; a batch's images are normalised as the policy normalises
    the env's observations (with ``normalizer``'s pixel bounds).

    :param trajectories: a dataset as :func:`dsrl.data.trajectories.load_dppo` reads it (states normalised,
        images as stored)
    :param rows: (N, cond_steps) the dataset rows of each history, oldest first
        (:func:`dsrl.data.trajectories.chunk_pairs`)
    :param normalizer: the dataset's bounds, covering the image pixels first
    :param device: where the data lives
    """

    def __init__(
        self,
        trajectories: Trajectories,
        rows: np.ndarray,
        normalizer: Normalizer,
        device: str | torch.device = "cpu",
    ):
        pixels = trajectories.n_pixels
        self.states = torch.as_tensor(trajectories.states, dtype=torch.float32, device=device)
        self.rows = torch.as_tensor(rows, dtype=torch.long, device=device)
        self.images = None
        if trajectories.images is not None:
            self.images = torch.as_tensor(trajectories.images, device=device).flatten(1)
        self.pixel_min = torch.as_tensor(normalizer.obs_min[:pixels], device=device)
        self.pixel_max = torch.as_tensor(normalizer.obs_max[:pixels], device=device)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, pairs: torch.Tensor) -> torch.Tensor:
        """(B,) pair indices -> their histories (B, cond_steps * obs_dim), each observation [pixels, state]."""
        rows = self.rows[pairs]
        obs = self.states[rows]
        if self.images is not None:
            pixels = scale_to_unit(self.images[rows].float(), self.pixel_min, self.pixel_max)
            obs = torch.cat([pixels, obs], dim=-1)
        return obs.flatten(1)
