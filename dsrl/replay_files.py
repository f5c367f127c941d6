"""Replay-buffer checkpoints that hold only the rows filled so far.

SB3's ``save_replay_buffer`` pickles every array at its full capacity: a
1M-transition buffer costs ~300 MB on disk after 20k Robomimic steps. Here a
buffer that is not yet full is pickled with its arrays cut to the first
``pos + 1`` rows (row ``pos`` holds the last next observation when SB3's
``optimize_memory_usage`` is on; the names of the cut arrays are stored with
it), and loading pads them back to ``buffer_size`` rows of zeros, as SB3
allocates them.
"""

from __future__ import annotations

import copy

import numpy as np
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.save_util import save_to_pkl

TRIMMED = "_trimmed_arrays"
"""Attribute of a saved buffer: the names of the arrays cut to its filled rows."""


def save_replay_buffer(model: BaseAlgorithm, path: str) -> None:
    """Pickle ``model.replay_buffer`` to ``path``, its row arrays cut to the filled rows unless it is full."""
    buffer = model.replay_buffer
    if buffer.full:
        save_to_pkl(path, buffer)
        return
    saved = copy.copy(buffer)
    names = [
        name
        for name, value in vars(buffer).items()
        if isinstance(value, np.ndarray) and value.ndim and len(value) == buffer.buffer_size
    ]
    for name in names:
        setattr(saved, name, getattr(buffer, name)[: buffer.pos + 1].copy())
    setattr(saved, TRIMMED, names)
    save_to_pkl(path, saved)


def load_replay_buffer(model: BaseAlgorithm, path: str) -> None:
    """Load a buffer saved by :func:`save_replay_buffer` (or by SB3) into ``model``, at its full capacity."""
    model.load_replay_buffer(path)
    buffer = model.replay_buffer
    for name in vars(buffer).pop(TRIMMED, []):
        rows = getattr(buffer, name)
        full = np.zeros((buffer.buffer_size, *rows.shape[1:]), rows.dtype)
        full[: len(rows)] = rows
        setattr(buffer, name, full)
