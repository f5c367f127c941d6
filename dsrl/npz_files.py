"""Reading npz files whose required arrays are named, with errors that name the file and what is missing."""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np


def read_arrays(path: str, keys: Sequence[str], what: str, optional: Sequence[str] = ()) -> dict[str, np.ndarray]:
    """The arrays ``keys`` of the npz at ``path``, and those of ``optional`` it holds; ``what`` names the
    file's role in error messages."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} {path!r} does not exist")
    with np.load(path) as data:
        missing = [k for k in keys if k not in data.files]
        if missing:
            raise ValueError(f"{what} {path!r} lacks array(s) {missing}; it has {sorted(data.files)}")
        return {k: np.asarray(data[k]) for k in [*keys, *optional] if k in data.files}
