"""``run(cfg)``: build the envs, the base policy and the agent of a DSRL run, then learn."""

from __future__ import annotations

import glob
import logging
import os
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from stable_baselines3 import SAC
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.logger import Logger, configure
from stable_baselines3.common.utils import get_device
from stable_baselines3.common.vec_env import VecEnv
from torch import nn

from dsrl.algorithms.policies import DSRLSACPolicy
from dsrl.algorithms.sac_diffusion_noise import SACDiffusionNoise
from dsrl.base_policies import NoisePolicy, Normalizer, load_base_policy
from dsrl.callbacks import DSRLCallback, WandbOutputFormat
from dsrl.config import check_run_config, user_path
from dsrl.data.offline import add_to_replay_buffer, chunk_transitions
from dsrl.envs.diffusion_env import DiffusionPolicyEnvWrapper
from dsrl.envs.factory import check_env_config, make_vec_env

log = logging.getLogger(__name__)

WORKER_ERRORS = (EOFError, BrokenPipeError, ConnectionResetError)
"""What SB3's SubprocVecEnv raises in the learner when a worker process has died."""


def sac_kwargs(cfg: DictConfig, device: torch.device, seed: int) -> dict[str, Any]:
    """SB3 SAC arguments shared by both variants, from ``cfg.train``."""
    train = cfg.train
    if train.activation not in ("Tanh", "ReLU", "Mish", "ELU", "GELU"):
        raise ValueError(f"train.activation={train.activation!r} is not one of Tanh, ReLU, Mish, ELU, GELU")
    ent_coef = f"auto_{train.ent_coef_init}" if train.learn_ent_coef else float(train.ent_coef_init)
    return dict(
        learning_rate=train.learning_rate,
        buffer_size=train.buffer_size,
        learning_starts=train.init_rollout_steps,
        batch_size=train.batch_size,
        tau=train.tau,
        gamma=train.gamma,
        train_freq=train.train_freq,
        gradient_steps=train.utd,
        ent_coef=ent_coef,
        target_entropy=train.target_entropy,
        policy_kwargs=dict(
            net_arch=[train.layer_size] * train.num_layers,
            activation_fn=getattr(nn, train.activation),
            n_critics=train.n_critics,
            layer_norm=train.layer_norm,
        ),
        seed=seed,
        device=device,
        verbose=0,
    )


def build_agent(cfg: DictConfig, env: VecEnv, base_policy: NoisePolicy, device: torch.device) -> BaseAlgorithm:
    """DSRL-NA (``SACDiffusionNoise``) on the chunk env, or SB3 SAC on the noise-action env (DSRL-SAC)."""
    kwargs = sac_kwargs(cfg, device, cfg.seed)
    if cfg.algorithm == "dsrl_na":
        return SACDiffusionNoise(
            "NoiseAliasingPolicy",
            env,
            base_policy=base_policy,
            action_magnitude=cfg.train.action_magnitude,
            noise_critic_grad_steps=cfg.train.noise_critic_grad_steps,
            critic_backup_combine_type=cfg.train.critic_backup_combine_type,
            backup_entropy=cfg.train.backup_entropy,
            **kwargs,
        )
    if not cfg.train.backup_entropy or cfg.train.critic_backup_combine_type != "min":
        raise ValueError(
            "dsrl_sac runs SB3's SAC: it needs train.backup_entropy=true and critic_backup_combine_type=min"
        )
    return SAC(DSRLSACPolicy, DiffusionPolicyEnvWrapper(env, base_policy, cfg.train.action_magnitude), **kwargs)


def check_offline_normalization(data_path: str, normalizer: Normalizer) -> None:
    """A DPPO dataset's ``normalization.npz`` (beside its train.npz) must be the base policy's."""
    data_norm = os.path.join(os.path.dirname(data_path), "normalization.npz")
    if not os.path.isfile(data_norm):
        raise FileNotFoundError(f"train.load_offline_data: {data_norm!r} (the dataset's normalization) does not exist")
    if not Normalizer.load(data_norm).matches(normalizer):
        raise ValueError(
            f"train.load_offline_data: {data_norm!r} differs from base_policy.normalization; the dataset's "
            "observations and actions would be scaled differently from the env's"
        )


def make_logger(cfg: DictConfig, run_dir: str) -> tuple[Logger, Any]:
    """SB3 logger writing stdout, CSV, TensorBoard (if enabled) and W&B (unless disabled)."""
    formats = ["stdout", "csv"] + (["tensorboard"] if cfg.tensorboard else [])
    logger = configure(run_dir, formats)
    wandb_run = None
    if cfg.wandb.mode != "disabled":
        import wandb

        wandb_run = wandb.init(
            mode=cfg.wandb.mode,
            project=cfg.wandb.project,
            group=cfg.wandb.group,
            name=cfg.wandb.name,
            dir=run_dir,
            config=OmegaConf.to_container(cfg, resolve=True),
        )
        logger.output_formats.append(WandbOutputFormat(wandb_run))
    return logger, wandb_run


def run(cfg: DictConfig) -> dict[str, float]:
    """Train DSRL as configured; returns the final evaluation (success_rate, return_mean, return_std)."""
    check_run_config(cfg)
    env_cfg = OmegaConf.to_container(cfg.env, resolve=True)
    check_env_config(env_cfg)
    device = get_device(cfg.device)
    run_dir = user_path(cfg.run_dir)
    os.makedirs(run_dir, exist_ok=True)

    base_cfg = OmegaConf.to_container(cfg.base_policy, resolve=True)
    base_cfg["checkpoint"] = user_path(base_cfg["checkpoint"])
    base_policy = load_base_policy(base_cfg, device)
    normalizer = Normalizer.load(user_path(base_cfg["normalization"]))
    normalizer.require_dims(base_policy.obs_dim, base_policy.action_dim, "base_policy.normalization")
    chunk, cond_steps = base_policy.chunk, base_policy.cond_steps

    env = make_vec_env(env_cfg, normalizer, chunk, cond_steps, env_cfg["n_envs"])
    eval_env = make_vec_env(env_cfg, normalizer, chunk, cond_steps, env_cfg["n_eval_envs"])
    wandb_run = None
    try:
        model = build_agent(cfg, env, base_policy, device)
        if cfg.algorithm == "dsrl_sac":
            eval_env = DiffusionPolicyEnvWrapper(eval_env, base_policy, cfg.train.action_magnitude)
        if cfg.train.load_offline_data:
            if cfg.algorithm != "dsrl_na":
                raise ValueError("train.load_offline_data needs algorithm=dsrl_na (DSRL-SAC's buffer holds noise)")
            data_path = user_path(cfg.train.load_offline_data)
            check_offline_normalization(data_path, normalizer)
            transitions = chunk_transitions(data_path, chunk, cfg.env.reward_offset)
            log.info("added %d offline transitions", add_to_replay_buffer(model.replay_buffer, transitions))
        logger, wandb_run = make_logger(cfg, run_dir)
        model.set_logger(logger)
        callback = DSRLCallback(
            eval_env,
            total_env_steps=cfg.train.total_env_steps,
            eval_interval=cfg.eval.interval_env_steps,
            eval_episodes=cfg.eval.n_episodes,
            eval_deterministic=cfg.eval.deterministic,
            save_interval=cfg.save_model_interval,
            checkpoint_dir=os.path.join(run_dir, "checkpoints"),
            seed=cfg.seed + 10_000,
            progress_bar=cfg.progress_bar,
        )
        try:
            model.learn(total_timesteps=cfg.train.total_env_steps, callback=callback, log_interval=cfg.log_interval)
        except WORKER_ERRORS as exc:
            saved = sorted(glob.glob(os.path.join(run_dir, "checkpoints", "model_*.zip")), key=os.path.getmtime)
            raise RuntimeError(
                f"an environment worker process died ({type(exc).__name__}: {exc}) at env step {callback.env_steps}; "
                f"the run directory {run_dir} is intact, latest checkpoint: {saved[-1] if saved else 'none yet'}"
            ) from exc
        return callback.last_eval
    finally:
        if wandb_run is not None:
            wandb_run.finish()
        close_envs(env, eval_env)


def close_envs(*envs: VecEnv) -> None:
    """Close VecEnvs; the processes of one whose worker died (its close fails) are terminated instead."""
    for venv in envs:
        try:
            venv.close()
        except WORKER_ERRORS:
            for process in venv.unwrapped.processes:
                process.terminate()
