"""Steer a LeRobot ``DiffusionPolicy`` saved with ``save_pretrained`` (optional extra ``dsrl[lerobot]``).

LeRobot pins an older torch than ours, so this module runs in its own
environment (``scripts/lerobot/make_env.sh``); the main install never imports it.

Shapes and units of :class:`LeRobotDiffusionAdapter` as a :class:`NoisePolicy`:

- ``obs``: (B, n_obs_steps * obs_dim), the policy's ``n_obs_steps`` raw
  observations stacked oldest first. One observation is every image feature
  of the policy's ``input_features`` in their order, as C*H*W numbers in
  [0, 255] (channels first, as :mod:`dsrl.envs.pusht` writes them), then
  ``observation.state``, then ``observation.environment_state`` when the
  policy has them. LeRobot's own preprocessor (images to [0, 1], its dataset
  statistics) normalises them, so the env side leaves observations as they are.
- ``noise``: (B, horizon, action_dim), LeRobot's prior: ``noise_steps`` is
  the policy's ``horizon``.
- returned chunk: (B, n_action_steps, action_dim), the actions
  ``select_action`` would execute (from step ``n_obs_steps - 1`` of the
  denoised horizon), normalised to [-1, 1] by LeRobot's MIN_MAX action
  statistics, which is DPPO's convention too.

:func:`lerobot_normalizer` turns those statistics into the env side's
``normalization.npz`` (identity for observations, LeRobot's action bounds), so
the env maps actions back exactly as LeRobot's postprocessor does.

Sampling is LeRobot's scheduler loop started from the given noise. DSRL needs
the sample to be a function of the initial noise: a DDIM scheduler (eta 0) is;
DDPM draws fresh noise at every step, so a DDPM policy is refused unless
``scheduler="ddim"`` asks for a DDIM scheduler over the same noise schedule.
"""

from __future__ import annotations

import math
import os
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

from dsrl.base_policies.base import NoisePolicy
from dsrl.base_policies.normalization import EPS, Normalizer

REQUIRED_FILES = ("config.json", "model.safetensors")
SCHEDULERS = ("native", "ddim")


def check_pretrained_dir(directory: str) -> None:
    """Raise a FileNotFoundError naming ``directory`` and the missing file of a LeRobot pretrained model."""
    if not os.path.isdir(directory):
        raise FileNotFoundError(
            f"base_policy.checkpoint={directory!r} is not a directory: with base_policy.type=lerobot it is "
            "LeRobot's pretrained_model directory (save_pretrained)"
        )
    for name in REQUIRED_FILES:
        if not os.path.isfile(os.path.join(directory, name)):
            raise FileNotFoundError(
                f"base_policy.checkpoint={directory!r} has no {name}: a LeRobot pretrained_model directory "
                f"(save_pretrained) holds {', '.join(REQUIRED_FILES)} and the processor files"
            )


class LeRobotConditioner(nn.Module):
    """LeRobot's preprocessing and observation encoder: flat raw observations -> its global conditioning.

    :param policy: the LeRobot ``DiffusionPolicy``
    :param preprocessor: its ``policy_preprocessor`` pipeline (normalisation with its dataset statistics)
    """

    def __init__(self, policy: nn.Module, preprocessor):
        super().__init__()
        from lerobot.utils.constants import OBS_IMAGES

        config = policy.config
        self.model, self.preprocessor, self.images_key = policy.diffusion, preprocessor, OBS_IMAGES
        self.features = [(key, tuple(feature.shape)) for key, feature in config.input_features.items()]
        self.image_keys = list(config.image_features)
        self.n_obs_steps = config.n_obs_steps
        self.obs_dim = sum(math.prod(shape) for _, shape in self.features)
        self.horizon_steps, self.noise_steps = config.n_action_steps, config.horizon
        self.action_dim = config.output_features["action"].shape[0]
        with torch.no_grad():
            self.feature_dim = self.encode_condition(torch.zeros(1, self.n_obs_steps * self.obs_dim)).shape[1]

    def encode_condition(self, obs: torch.Tensor) -> torch.Tensor:
        """(B, n_obs_steps * obs_dim) raw observations -> (B, global_cond_dim)."""
        batch = obs.shape[0]
        steps = obs.reshape(batch * self.n_obs_steps, self.obs_dim)
        raw, start = {}, 0
        for key, shape in self.features:
            size = math.prod(shape)
            value = steps[:, start : start + size].reshape(-1, *shape)
            raw[key] = value / 255.0 if key in self.image_keys else value
            start += size
        normalised = self.preprocessor(raw)
        stacked = {k: v.reshape(batch, self.n_obs_steps, *v.shape[1:]) for k, v in normalised.items() if k in raw}
        if self.image_keys:
            stacked[self.images_key] = torch.stack([stacked[k] for k in self.image_keys], dim=2)
        return self.model._prepare_global_conditioning(stacked)


class LeRobotDiffusionAdapter(NoisePolicy):
    """A LeRobot ``DiffusionPolicy`` as a frozen :class:`NoisePolicy` (shapes in the module docstring).

    :param policy: the LeRobot ``DiffusionPolicy``
    :param preprocessor: its ``policy_preprocessor`` pipeline
    :param scheduler: ``native`` (the policy's own scheduler; must be DDIM) or ``ddim`` (a DDIM
        scheduler over the policy's noise schedule, e.g. for a policy trained with DDPM)
    """

    graph_capturable = False  # diffusers' schedulers build their timesteps from numpy and branch on tensors

    def __init__(self, policy: nn.Module, preprocessor, scheduler: str = "native"):
        from diffusers import DDIMScheduler

        conditioner = LeRobotConditioner(policy, preprocessor)
        super().__init__(conditioner, conditioner.obs_dim, conditioner.n_obs_steps)
        model = policy.diffusion
        if scheduler not in SCHEDULERS:
            raise ValueError(f"base_policy.scheduler={scheduler!r} is not one of {SCHEDULERS}")
        if scheduler == "ddim":
            model.noise_scheduler = DDIMScheduler.from_config(model.noise_scheduler.config)
        elif not isinstance(model.noise_scheduler, DDIMScheduler):
            raise ValueError(
                f"the LeRobot policy samples with {type(model.noise_scheduler).__name__}, which adds fresh noise at "
                "every step, so its actions are not a function of the initial noise: set base_policy.scheduler=ddim "
                "to sample it with DDIM over the same noise schedule"
            )
        self.freeze()

    @property
    def noise_steps(self) -> int:
        return self.network.noise_steps

    def sample_from_features(self, features: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        model, start = self.network.model, self.cond_steps - 1
        horizon = model.conditional_sample(features.shape[0], global_cond=features, noise=noise)
        return horizon[:, start : start + self.chunk]

    def loss(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        raise TypeError("LeRobotDiffusionAdapter only samples; train the policy with LeRobot")


def load_lerobot_policy(
    directory: str, device: torch.device | str = "cpu", scheduler: str = "native"
) -> tuple[LeRobotDiffusionAdapter, Normalizer]:
    """The adapter for the LeRobot ``DiffusionPolicy`` saved in ``directory`` and the env side's normaliser."""
    check_pretrained_dir(directory)
    try:
        from lerobot.policies.diffusion.modeling_diffusion import DiffusionPolicy
        from lerobot.policies.factory import make_pre_post_processors
    except ImportError as exc:
        raise ImportError(
            f"base_policy.type=lerobot needs LeRobot ({exc}); it lives in its own environment: "
            "scripts/lerobot/make_env.sh builds it"
        ) from None
    policy = DiffusionPolicy.from_pretrained(directory)
    policy.config.device = str(device)
    overrides = {"device_processor": {"device": str(device)}}
    preprocessor, postprocessor = make_pre_post_processors(
        policy.config, pretrained_path=directory, preprocessor_overrides=overrides
    )
    adapter = LeRobotDiffusionAdapter(policy.to(device), preprocessor, scheduler)
    return adapter, lerobot_normalizer(postprocessor, adapter.obs_dim, directory)


def load_configured_lerobot_policy(cfg: Mapping[str, Any], device: torch.device | str) -> LeRobotDiffusionAdapter:
    """The adapter for ``base_policy.type=lerobot``; the config's shapes must be the policy's.

    Keys: ``checkpoint`` (the pretrained_model directory), ``scheduler``
    (``native`` | ``ddim``), ``obs_dim``, ``action_dim``, ``horizon_steps``
    (LeRobot's ``n_action_steps``) and ``cond_steps`` (its ``n_obs_steps``).
    """
    directory = cfg["checkpoint"]
    adapter, _ = load_lerobot_policy(directory, device, cfg.get("scheduler", "native"))
    shapes = dict(obs_dim=adapter.obs_dim, action_dim=adapter.action_dim)
    shapes.update(horizon_steps=adapter.chunk, cond_steps=adapter.cond_steps)
    for key, value in shapes.items():
        if cfg.get(key) != value:
            raise ValueError(f"base_policy.{key}={cfg.get(key)!r}, but the LeRobot policy in {directory!r} has {value}")
    return adapter


def lerobot_normalizer(postprocessor, obs_dim: int, source: str) -> Normalizer:
    """Identity bounds for observations (LeRobot normalises its own) and the postprocessor's action min/max.

    The observation bounds are -1 and 1 - EPS, which make :class:`Normalizer`'s
    ``2 * ((obs - min) / (max - min + EPS) - 0.5)`` exactly the identity in float32.
    """
    from lerobot.configs.types import FeatureType, NormalizationMode
    from lerobot.processor import UnnormalizerProcessorStep

    steps = [step for step in postprocessor.steps if isinstance(step, UnnormalizerProcessorStep)]
    if not steps or "action" not in steps[0].stats:
        raise ValueError(f"{source}: the policy_postprocessor has no action statistics")
    mode = steps[0].norm_map.get(FeatureType.ACTION)
    if mode != NormalizationMode.MIN_MAX:
        raise ValueError(f"{source}: actions are normalised with {mode}, the adapter needs MIN_MAX ([-1, 1] bounds)")
    stats = steps[0].stats["action"]
    action_min = np.asarray(stats["min"], np.float32).reshape(-1)
    action_max = np.asarray(stats["max"], np.float32).reshape(-1)
    return Normalizer(np.full(obs_dim, -1, np.float32), np.full(obs_dim, 1 - EPS, np.float32), action_min, action_max)
