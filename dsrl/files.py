"""Atomic file writes: a file is written under a temporary name, then moved into place.

Readers therefore never see a half-written checkpoint, dataset, log or video,
whenever the writer is interrupted.
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable


def write_atomic(path: str, write: Callable[[str], Any]) -> None:
    """Call ``write(tmp_path)``, then move the finished file to ``path`` (the temporary name keeps the extension)."""
    directory, name = os.path.split(path)
    tmp = os.path.join(directory, f".partial.{name}")
    write(tmp)
    os.replace(tmp, path)


def write_text(path: str, text: str) -> None:
    """Write ``text`` to ``path``, atomically."""

    def write(tmp: str) -> None:
        with open(tmp, "w") as f:
            f.write(text)

    write_atomic(path, write)


def write_json(path: str, value: Any, indent: int = 1) -> None:
    """Write ``value`` as JSON indented by ``indent`` spaces, atomically."""
    write_text(path, json.dumps(value, indent=indent))
