"""Reading and writing base-policy checkpoints in DPPO's format.

A checkpoint is ``torch.save({"epoch": int, "model": state_dict, "ema": state_dict})``
with keys prefixed ``network.``; ``ema`` is preferred when present.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

import torch
import yaml
from torch import nn

from dsrl.files import write_atomic


def read_state_dict(path: str) -> Mapping[str, torch.Tensor]:
    """The policy weights stored in a DPPO checkpoint (``ema`` if present, else ``model``)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"base-policy checkpoint {path!r} does not exist")
    data = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("ema", "model"):
        if isinstance(data, dict) and key in data:
            return data[key]
    found = sorted(data) if isinstance(data, dict) else type(data).__name__
    raise ValueError(f"checkpoint {path!r} has neither 'ema' nor 'model' (found {found})")


CARD = "card.yaml"
TRAINED_SETTINGS = {
    "diffusion": ("type", "activation_type", "out_activation_type", "denoising_steps"),
    "flow": ("type", "activation_type", "out_activation_type", "time_scale"),
}
"""Per policy type, the settings a checkpoint's weights were trained for that its tensors' shapes do not show
(the sampler's step counts, ``ddim_steps`` and ``flow_steps``, may differ from training)."""


def check_trained_settings(cfg: Mapping[str, Any], path: str) -> None:
    """Compare ``cfg`` with the ``card.yaml`` that ``scripts/pretrain.py`` writes beside its checkpoints, when the
    checkpoint's folder has one (DPPO's checkpoints carry no such record).

    :raises ValueError: naming the first setting of :data:`TRAINED_SETTINGS` that differs, and both values
    """
    card_path = os.path.join(os.path.dirname(os.path.abspath(path)), CARD)
    if not os.path.isfile(card_path):
        return
    with open(card_path) as f:
        trained = (yaml.safe_load(f) or {}).get("policy") or {}
    for key in TRAINED_SETTINGS.get(trained.get("type"), ("type",)):
        if key in trained and cfg.get(key) != trained[key]:
            raise ValueError(
                f"base_policy.{key}={cfg.get(key)!r}, but checkpoint {path!r} was trained with "
                f"{key}={trained[key]!r} ({card_path}): set base_policy.{key}={trained[key]}"
            )


def load_matching(module: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str) -> None:
    """Load ``state_dict`` into ``module``, requiring the same keys and shapes.

    The error names the first key that is missing, unexpected or of another
    shape, with both shapes, so a config that disagrees with a checkpoint is
    found before any rollout.
    """
    expected = module.state_dict()
    for key, tensor in expected.items():
        if key not in state_dict:
            raise ValueError(f"checkpoint {source!r} lacks key {key!r} (config expects shape {tuple(tensor.shape)})")
        if tuple(state_dict[key].shape) != tuple(tensor.shape):
            raise ValueError(
                f"checkpoint {source!r} key {key!r} has shape {tuple(state_dict[key].shape)}, "
                f"config expects {tuple(tensor.shape)}"
            )
    extra = [k for k in state_dict if k not in expected]
    if extra:
        raise ValueError(
            f"checkpoint {source!r} has key {extra[0]!r} of shape {tuple(state_dict[extra[0]].shape)} "
            f"that the config does not build ({len(extra)} unexpected keys in all)"
        )
    module.load_state_dict(state_dict)


def save_checkpoint(path: str, model: nn.Module | None, ema: nn.Module, epoch: int) -> None:
    """Write ``{"epoch", "model", "ema"}`` atomically (a temporary file renamed into place); without ``model``,
    ``{"epoch", "ema"}``, which loads the same."""
    state: dict = {"epoch": epoch}
    if model is not None:
        state["model"] = model.state_dict()
    state["ema"] = ema.state_dict()
    write_atomic(path, lambda tmp: torch.save(state, tmp))
