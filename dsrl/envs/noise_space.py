"""The noise action space DSRL's agents act in."""

from __future__ import annotations

import numpy as np
from gymnasium import spaces


class NoiseBox(spaces.Box):
    """``Box(±action_magnitude)`` whose ``sample()`` is the base policy's own noise.

    Samples are standard normal draws clipped to the bounds, so SB3's warm-up
    (``learning_starts``), which samples the action space, rolls out the base
    policy rather than uniform noise.
    """

    def __init__(self, magnitude: float, dim: int, seed: int | None = None):
        if magnitude <= 0:
            raise ValueError(f"action_magnitude={magnitude} must be > 0")
        super().__init__(-magnitude, magnitude, (dim,), np.float32, seed=seed)
        self.magnitude = float(magnitude)

    def sample(self, mask=None, probability=None) -> np.ndarray:
        draw = self.np_random.standard_normal(self.shape)
        return np.clip(draw, -self.magnitude, self.magnitude).astype(np.float32)
