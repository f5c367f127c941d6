"""Comparing the settings that made a saved run with those it is continued with."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from omegaconf import DictConfig, OmegaConf

CONFIG = "config.yaml"
"""A run directory's resolved config, the settings it was made with (``<run_dir>/config.yaml``)."""


class _NotSet:
    """The value shown for a setting one side does not have (a run made before the setting existed)."""

    def __repr__(self) -> str:
        return "<not set>"


NOT_SET = _NotSet()


def first_difference(
    before: Mapping[str, Any], now: Mapping[str, Any], skip: tuple[str, ...] = (), prefix: str = ""
) -> tuple[str, Any, Any] | None:
    """The first setting whose value differs: ``(dotted key, before, now)``, or None.

    Settings are taken in ``before``'s order, then those only in ``now``; nested mappings are compared
    setting by setting; a setting missing on one side compares as None and is returned as :data:`NOT_SET`.

    :param skip: dotted keys that may differ
    """
    for key in [*before, *(k for k in now if k not in before)]:
        name, old, new = f"{prefix}{key}", before.get(key), now.get(key)
        if name in skip:
            continue
        if isinstance(old, Mapping) and isinstance(new, Mapping):
            found = first_difference(old, new, skip, f"{name}.")
            if found:
                return found
        elif old != new:
            return name, before.get(key, NOT_SET), now.get(key, NOT_SET)
    return None


def selected_settings(cfg: DictConfig, keys: Sequence[str]) -> dict[str, Any]:
    """The resolved values of the dotted ``keys`` in ``cfg`` (a section: all its settings), keyed by them."""
    values = {}
    for key in keys:
        value = OmegaConf.select(cfg, key)
        values[key] = OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
    return values
