"""Config helpers: repository-relative paths and checks that fail before anything is built."""

from __future__ import annotations

import difflib
import math
import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from dsrl.algorithms.sac_diffusion_noise import COMBINE_TYPES
from dsrl.base_policies.lerobot_adapter import check_pretrained_dir
from dsrl.envs.noise_space import EXPANSIONS

REPO_ROOT = Path(__file__).resolve().parent.parent
ALGORITHMS = ("dsrl_na", "dsrl_sac")
WANDB_MODES = ("online", "offline", "disabled")
AGENT_OBS = ("raw", "policy_embedding")
DSRL_NA_OPTIONS = {  # train.<option> only DSRL-NA has, and why SB3's SAC (dsrl_sac) cannot honour it
    "overlap_env_steps": "which steps its envs",
    "kl_to_base_noise": "whose entropy term it cannot change",
    "torch_compile": "whose gradient steps it runs as they are",
    "autocast_bf16": "whose gradient steps it runs as they are",
    "precompute_distillation": "which has no noise critic to distil",
    "load_offline_data": "whose buffer holds noise, which offline data lacks",
}
BASE_CONFIG = Path(__file__).resolve().parent / "conf" / "dsrl_base.yaml"
OPEN_SECTIONS = ("hydra", "base_policy", "env.kwargs")
"""Sections whose keys dsrl_base.yaml does not list: Hydra's own, the base policy's (``build_base_policy`` refuses
unknown ones) and the simulator's constructor arguments."""


def repo_path(relative: str) -> str:
    """Absolute path of a file shipped in the repository (``${repo:checkpoints/...}`` in configs)."""
    return str(REPO_ROOT / relative)


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("repo"):
        OmegaConf.register_new_resolver("repo", repo_path)


register_resolvers()


def hydra_dir_follows_run_dir(argv: list[str]) -> list[str]:
    """A Hydra entry point's ``argv`` with Hydra's output directory set to the run's (unless ``hydra.run.dir`` is
    given), so Hydra's own files (``.hydra/``, the script's log) go there, not into a ``runs/<task>/<date>/`` beside
    it: ``run_dir=DIR`` adds ``hydra.run.dir=DIR``; ``resume=DIR`` too, its ``.hydra/`` files in
    ``.hydra/resumed_<date>/`` so the run's own stay."""
    if any(arg.startswith("hydra.run.dir=") for arg in argv):
        return argv
    given = {key: value for key, _, value in (arg.partition("=") for arg in argv)}
    if given.get("resume", "null") not in ("null", ""):
        return [
            *argv,
            f"hydra.run.dir={given['resume']}",
            "hydra.output_subdir=.hydra/resumed_${now:%Y-%m-%d_%H-%M-%S}",
        ]
    if "run_dir" in given:
        return [*argv, f"hydra.run.dir={given['run_dir']}"]
    return argv


def user_path(path: str) -> str:
    """A user-given path, relative to the directory the command was started from."""
    return os.path.abspath(os.path.expanduser(path))


def base_policy_config(cfg: DictConfig) -> dict:
    """The resolved ``base_policy`` section of ``cfg``, its checkpoint path taken as the user gave it."""
    base_cfg = OmegaConf.to_container(cfg.base_policy, resolve=True)
    base_cfg["checkpoint"] = user_path(base_cfg["checkpoint"])
    return base_cfg


def shown_path(path: str) -> str:
    """``path`` relative to the repository when it lies inside it (for files written into the repo), else as is."""
    absolute = Path(user_path(path))
    return str(absolute.relative_to(REPO_ROOT)) if absolute.is_relative_to(REPO_ROOT) else path


def check_known_keys(settings: dict[str, Any], known: dict[str, Any], prefix: str = "") -> None:
    """Raise a ValueError naming a key of ``settings`` that ``known`` (dsrl_base.yaml) lacks, and the closest one.

    A key misspelt in a task config, a recipe or a ``+key=`` override would
    otherwise be ignored and the default left in force.
    """
    for key, value in settings.items():
        path = f"{prefix}{key}"
        if path in OPEN_SECTIONS:
            continue
        if key not in known:
            close = difflib.get_close_matches(str(key), [str(name) for name in known], n=1)
            hint = f"; did you mean {prefix}{close[0]}?" if close else ""
            raise ValueError(f"{path} is not a setting ({shown_path(str(BASE_CONFIG))} lists every one){hint}")
        if isinstance(value, dict) and isinstance(known[key], dict):
            check_known_keys(value, known[key], f"{path}.")


def check_positive_number(name: str, value: Any) -> None:
    """Raise a ValueError naming ``name`` unless ``value`` is a finite number > 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name}={value!r} must be a finite number > 0")


def check_run_config(cfg: DictConfig) -> None:
    """Raise a ValueError naming the field and value of the first invalid setting."""
    check_known_keys(
        OmegaConf.to_container(cfg, resolve=False), OmegaConf.to_container(OmegaConf.load(BASE_CONFIG), resolve=False)
    )
    if cfg.algorithm not in ALGORITHMS:
        raise ValueError(f"algorithm={cfg.algorithm!r} is not one of {ALGORITHMS}")
    train = cfg.train
    check_positive_number("train.action_magnitude", train.action_magnitude)
    if isinstance(train.noise_action_dim, bool) or not isinstance(train.noise_action_dim, int):
        raise ValueError(f"train.noise_action_dim={train.noise_action_dim!r} must be an integer (<= 0: the full noise)")
    if not isinstance(train.utd, int) or train.utd < 1:
        raise ValueError(f"train.utd={train.utd!r} must be an integer >= 1")
    if train.critic_backup_combine_type not in COMBINE_TYPES:
        raise ValueError(f"train.critic_backup_combine_type={train.critic_backup_combine_type!r} is not min or mean")
    if train.actor_combine_type not in (None, *COMBINE_TYPES):
        raise ValueError(f"train.actor_combine_type={train.actor_combine_type!r} is not null, min or mean")
    if not 0 <= train.target_critics <= train.n_critics:
        n_critics = train.n_critics
        raise ValueError(f"train.target_critics={train.target_critics} must lie in [0, train.n_critics={n_critics}]")
    lerobot = cfg.base_policy.type == "lerobot"  # its noise is LeRobot's horizon: checked when it is loaded
    full_noise = cfg.base_policy.horizon_steps * cfg.base_policy.action_dim
    if train.noise_action_dim > full_noise and not lerobot:
        raise ValueError(
            f"train.noise_action_dim={train.noise_action_dim} is larger than the base policy's noise "
            f"(horizon_steps {cfg.base_policy.horizon_steps} x action_dim {cfg.base_policy.action_dim} = "
            f"{full_noise}); use at most {full_noise}, or <= 0 for the full noise"
        )
    if train.noise_expansion not in EXPANSIONS:
        raise ValueError(f"train.noise_expansion={train.noise_expansion!r} is not one of {EXPANSIONS}")
    for option, why in DSRL_NA_OPTIONS.items():
        value = train[option]
        if value and cfg.algorithm != "dsrl_na":
            shown = str(value).lower() if isinstance(value, bool) else repr(value)
            raise ValueError(f"train.{option}={shown} is DSRL-NA's; algorithm={cfg.algorithm} runs SB3's SAC, {why}")
    if train.actor_combine_type == "mean" and cfg.algorithm != "dsrl_na":
        raise ValueError(
            f"train.actor_combine_type=mean is DSRL-NA's; algorithm={cfg.algorithm} runs SB3's SAC, whose actor "
            "takes the min over its critics"
        )
    check_positive_number("train.kl_prior_noise_scale", train.kl_prior_noise_scale)
    if train.kl_prior_noise_scale != 1 and not train.kl_to_base_noise:
        raise ValueError(
            f"train.kl_prior_noise_scale={train.kl_prior_noise_scale} scales the prior of train.kl_to_base_noise, "
            "which is false; set train.kl_to_base_noise=true"
        )
    if train.agent_obs not in AGENT_OBS:
        raise ValueError(f"train.agent_obs={train.agent_obs!r} is not one of {AGENT_OBS}")
    for scale in cfg.eval.base_policy_noise_scales:
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or scale < 0:
            scales = list(cfg.eval.base_policy_noise_scales)
            raise ValueError(f"eval.base_policy_noise_scales={scales} holds {scale!r}; each must be a number >= 0")
    if cfg.wandb.mode not in WANDB_MODES:
        raise ValueError(f"wandb.mode={cfg.wandb.mode!r} is not one of {WANDB_MODES}")
    for key in ("log_checkpoints", "log_videos"):
        if cfg.wandb[key] and cfg.wandb.mode == "disabled":
            raise ValueError(f"wandb.{key}=true logs W&B artifacts, but wandb.mode=disabled (use offline/online)")
    if lerobot:
        check_pretrained_dir(user_path(cfg.base_policy.checkpoint))
    for key in ("normalization",) if lerobot else ("checkpoint", "normalization"):
        path = cfg.base_policy.get(key)
        if not path or not os.path.isfile(user_path(path)):
            raise FileNotFoundError(
                f"base_policy.{key}={path!r} does not exist. Put a DPPO-format checkpoint and its "
                f"normalization.npz there, or point base_policy.{key}=... at your own files "
                f"(README, 'Base policies', says how to make them)."
            )


def compose_task_config(config_file: str, overrides: list[str] = ()) -> DictConfig:
    """The config a ``--config-path=DIR --config-name=NAME`` command would get, with overrides.

    A DSRL config's ``run_dir`` refers to Hydra's output directory, so callers
    outside a Hydra run must override it.
    """
    from hydra import compose, initialize_config_dir

    path = Path(user_path(config_file))
    with initialize_config_dir(config_dir=str(path.parent), version_base="1.3"):
        return compose(config_name=path.name, overrides=list(overrides))
