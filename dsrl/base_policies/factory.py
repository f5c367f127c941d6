"""Build a base policy from its config mapping and load its checkpoint.

The mapping (``cfg.base_policy`` in the Hydra configs) holds:

- ``type``: ``diffusion`` or ``flow``;
- ``checkpoint`` / ``normalization``: file paths (used by :func:`load_base_policy`);
- network settings, DPPO's names: ``obs_dim``, ``action_dim``, ``horizon_steps``,
  ``cond_steps``, ``time_dim``, ``mlp_dims``, ``cond_mlp_dims``,
  ``activation_type``, ``out_activation_type``, ``residual_style``, ``use_layernorm``;
- image policies: ``image_shape`` ([C, H, W] of the image at the start of
  each observation; null or absent: a state policy) and ``image_encoder``
  (:class:`~dsrl.base_policies.image_encoder.ImageEncoder` settings);
- sampler settings: diffusion ``denoising_steps``, ``ddim_steps``,
  ``denoised_clip_value``; flow ``flow_steps``, ``time_scale``; both
  ``final_action_clip_value``. A config may carry both types' settings; only
  the configured type's are used, so switching ``type`` needs no other edit.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch

from dsrl.base_policies.base import NoisePolicy
from dsrl.base_policies.checkpoint import check_trained_settings, load_matching, read_state_dict
from dsrl.base_policies.diffusion import DiffusionPolicy
from dsrl.base_policies.flow import FlowPolicy
from dsrl.base_policies.image_encoder import ImageDenoiserMLP
from dsrl.base_policies.networks import DenoiserMLP

NETWORK_KEYS = {
    "time_dim",
    "mlp_dims",
    "cond_mlp_dims",
    "activation_type",
    "out_activation_type",
    "use_layernorm",
    "residual_style",
}
SAMPLER_KEYS = {
    "diffusion": {"denoising_steps", "ddim_steps", "denoised_clip_value", "final_action_clip_value"},
    "flow": {"flow_steps", "time_scale", "final_action_clip_value"},
}
POLICY_CLASSES = {"diffusion": DiffusionPolicy, "flow": FlowPolicy}
FILE_KEYS = {"checkpoint", "normalization"}
IMAGE_KEYS = {"image_shape", "image_encoder"}
LEROBOT_KEYS = {"scheduler"}
SHAPE_KEYS = {"obs_dim", "action_dim", "horizon_steps", "cond_steps"}


def build_base_policy(cfg: Mapping[str, Any]) -> NoisePolicy:
    """A randomly initialised policy of the configured type and sizes (trainable, on CPU)."""
    kind = cfg.get("type")
    if kind not in POLICY_CLASSES:
        raise ValueError(f"base_policy.type={kind!r} is not one of {sorted(POLICY_CLASSES)}")
    known = {"type"} | FILE_KEYS | SHAPE_KEYS | NETWORK_KEYS | IMAGE_KEYS | LEROBOT_KEYS
    known |= set().union(*SAMPLER_KEYS.values())
    unknown = sorted(set(cfg) - known)
    if unknown:
        raise ValueError(f"base_policy has unknown key(s) {unknown}; known: {sorted(known)}")
    for key in ("obs_dim", "action_dim", "horizon_steps"):
        if not isinstance(cfg.get(key), int) or cfg[key] < 1:
            raise ValueError(f"base_policy.{key}={cfg.get(key)!r} must be a positive integer")
    cond_steps = int(cfg.get("cond_steps", 1))
    net_kwargs = {k: cfg[k] for k in NETWORK_KEYS if k in cfg}
    for key in ("mlp_dims", "cond_mlp_dims"):
        if net_kwargs.get(key) is not None:
            net_kwargs[key] = list(net_kwargs[key])
    shapes = dict(action_dim=cfg["action_dim"], horizon_steps=cfg["horizon_steps"])
    if cfg.get("image_shape"):
        encoder = dict(cfg.get("image_encoder") or {})
        network = ImageDenoiserMLP(
            list(cfg["image_shape"]), cfg["obs_dim"], cond_steps, image_encoder=encoder, **shapes, **net_kwargs
        )
    else:
        network = DenoiserMLP(cond_dim=cfg["obs_dim"] * cond_steps, **shapes, **net_kwargs)
    sampler_kwargs = {k: cfg[k] for k in SAMPLER_KEYS[kind] if k in cfg}
    return POLICY_CLASSES[kind](network, obs_dim=cfg["obs_dim"], cond_steps=cond_steps, **sampler_kwargs)


def load_base_policy(cfg: Mapping[str, Any], device: torch.device | str = "cpu") -> NoisePolicy:
    """The configured policy with its checkpoint's weights, frozen, on ``device``.

    ``type: lerobot`` loads a LeRobot ``DiffusionPolicy`` through
    :mod:`dsrl.base_policies.lerobot_adapter` (its own environment, see there).
    """
    if cfg.get("type") == "lerobot":
        from dsrl.base_policies.lerobot_adapter import load_configured_lerobot_policy

        return load_configured_lerobot_policy(cfg, device)
    path = cfg.get("checkpoint")
    if not path:
        raise ValueError("base_policy.checkpoint is not set: give the path of a DPPO-format checkpoint")
    check_trained_settings(cfg, path)
    policy = build_base_policy(cfg)
    load_matching(policy, read_state_dict(path), path)
    return policy.to(device).freeze()
