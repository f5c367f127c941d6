"""``run(cfg)``: build the envs, the base policy and the agent of a DSRL run, then learn."""

from __future__ import annotations

import logging
import os
from functools import partial
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from stable_baselines3 import SAC
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.logger import Logger
from stable_baselines3.common.utils import get_device
from stable_baselines3.common.vec_env import VecEnv
from torch import nn

from dsrl.algorithms.policies import DSRLSACPolicy
from dsrl.algorithms.sac_diffusion_noise import SACDiffusionNoise
from dsrl.base_policies import NoisePolicy, Normalizer, PolicyEmbeddingView, load_base_policy
from dsrl.callbacks import DSRLCallback
from dsrl.checkpointing import Checkpointer, Resume, load_resume, save_run_config
from dsrl.config import base_policy_config, check_run_config, user_path
from dsrl.data.offline import add_to_replay_buffer, agent_observations, chunk_transitions, load_in_policy_bounds
from dsrl.envs.diffusion_env import DiffusionPolicyEnvWrapper
from dsrl.envs.embedding_env import PolicyEmbeddingObservation
from dsrl.envs.factory import check_env_config, check_observations, make_vec_env
from dsrl.envs.prefetch import PrefetchVecEnv
from dsrl.evaluation import EvaluationStopped, evaluate_base_policy
from dsrl.interrupts import RunInterrupted, StopRequest
from dsrl.replay_files import load_replay_buffer
from dsrl.run_logging import ENV_STEPS, finish_wandb_run, log_file_artifact, make_logger
from dsrl.video import EvalVideo, find_renderer, renderer_candidates

log = logging.getLogger(__name__)

MUJOCO_SUITES = ("gym", "robomimic", "fetch")
"""Suites whose simulators render through MuJoCo's offscreen contexts."""

WORKER_ERRORS = (EOFError, BrokenPipeError, ConnectionResetError)
"""What SB3's SubprocVecEnv raises in the learner when a worker process has died."""


def training_device(cfg: DictConfig) -> torch.device:
    """The device ``cfg.device`` names; on CUDA, float32 matmuls and convolutions are set to TF32 when ``cfg.tf32``."""
    device = get_device(cfg.device)
    if device.type == "cuda":
        precision = "tf32" if cfg.tf32 else "ieee"
        torch.backends.cuda.matmul.fp32_precision = precision
        torch.backends.cudnn.conv.fp32_precision = precision
    return device


def learning_starts(init_rollout_steps: int, n_envs: int) -> int:
    """SB3's ``learning_starts`` (transitions) for ``init_rollout_steps`` vector steps of base-policy rollouts.

    ``init_rollout_steps`` counts vector steps, as in the DSRL authors' code
    (their 1501 on Can with 4 envs: 6,004 transitions, 24,016 simulator steps).
    SB3 rolls out the warm-up while ``num_timesteps < learning_starts`` and
    first updates once ``num_timesteps > learning_starts``, so ``n * n_envs - 1``
    gives exactly ``n`` warm-up vector steps, then an update before the actor
    first acts.
    """
    return max(init_rollout_steps * n_envs - 1, 0)


def sac_kwargs(cfg: DictConfig, device: torch.device, seed: int) -> dict[str, Any]:
    """SB3 SAC arguments shared by both variants, from ``cfg.train``."""
    train = cfg.train
    if train.activation not in ("Tanh", "ReLU", "Mish", "ELU", "GELU"):
        raise ValueError(f"train.activation={train.activation!r} is not one of Tanh, ReLU, Mish, ELU, GELU")
    ent_coef = f"auto_{train.ent_coef_init}" if train.learn_ent_coef else float(train.ent_coef_init)
    return dict(
        learning_rate=train.learning_rate,
        buffer_size=train.buffer_size,
        learning_starts=learning_starts(train.init_rollout_steps, cfg.env.n_envs),
        batch_size=train.batch_size,
        tau=train.tau,
        gamma=train.gamma,
        train_freq=train.train_freq,
        gradient_steps=train.utd,
        ent_coef=ent_coef,
        target_entropy=train.target_entropy,
        replay_buffer_kwargs=dict(handle_timeout_termination=train.bootstrap_time_limit),
        policy_kwargs=dict(
            net_arch=[train.layer_size] * train.num_layers,
            activation_fn=getattr(nn, train.activation),
            n_critics=train.n_critics,
            target_critics=train.target_critics,
            layer_norm=train.layer_norm,
            actor_zero_init=train.actor_zero_init,
            optimizer_kwargs={"fused": True} if train.fused_optimizer else {},
        ),
        seed=seed,
        device=device,
        verbose=0,
    )


def agent_policy(cfg: DictConfig, base_policy: NoisePolicy) -> NoisePolicy:
    """The base policy as the agent steers it: itself, or its embedding view (``train.agent_obs``)."""
    return PolicyEmbeddingView(base_policy) if cfg.train.agent_obs == "policy_embedding" else base_policy


def in_agent_spaces(cfg: DictConfig, venv: VecEnv, base_policy: NoisePolicy) -> VecEnv:
    """``venv`` (a chunk env) in the agent's spaces.

    Observations are raw or the base policy's embedding (``train.agent_obs``);
    actions are chunks for DSRL-NA and noise for DSRL-SAC, whose env denoises
    through the base policy.
    """
    if cfg.train.agent_obs == "policy_embedding":
        venv = PolicyEmbeddingObservation(venv, base_policy)
    if cfg.algorithm == "dsrl_sac":
        train = cfg.train
        return DiffusionPolicyEnvWrapper(
            venv, agent_policy(cfg, base_policy), train.action_magnitude, train.noise_action_dim, train.noise_expansion
        )
    return venv


def dsrl_na_env(cfg: DictConfig, venv: VecEnv, base_policy: NoisePolicy) -> VecEnv:
    """DSRL-NA's env: ``venv`` in the agent's spaces, its steps launched early with ``train.overlap_env_steps``."""
    venv = in_agent_spaces(cfg, venv, base_policy)
    return PrefetchVecEnv(venv) if cfg.train.overlap_env_steps else venv


def build_agent(cfg: DictConfig, env: VecEnv, base_policy: NoisePolicy, device: torch.device) -> BaseAlgorithm:
    """DSRL-NA (``SACDiffusionNoise``) on the chunk env, or SB3 SAC on the noise-action env (DSRL-SAC)."""
    kwargs = sac_kwargs(cfg, device, cfg.seed)
    if cfg.algorithm == "dsrl_na":
        return SACDiffusionNoise(
            "NoiseAliasingPolicy",
            dsrl_na_env(cfg, env, base_policy),
            base_policy=agent_policy(cfg, base_policy),
            action_magnitude=cfg.train.action_magnitude,
            noise_critic_grad_steps=cfg.train.noise_critic_grad_steps,
            critic_backup_combine_type=cfg.train.critic_backup_combine_type,
            actor_combine_type=cfg.train.actor_combine_type,
            backup_entropy=cfg.train.backup_entropy,
            kl_to_base_noise=cfg.train.kl_to_base_noise,
            kl_prior_noise_scale=cfg.train.kl_prior_noise_scale,
            precompute_distillation=cfg.train.precompute_distillation,
            cuda_graphs=cfg.train.cuda_graphs,
            torch_compile=cfg.train.torch_compile,
            autocast_bf16=cfg.train.autocast_bf16,
            overlap_env_steps=cfg.train.overlap_env_steps,
            noise_action_dim=cfg.train.noise_action_dim,
            noise_expansion=cfg.train.noise_expansion,
            **kwargs,
        )
    if not cfg.train.backup_entropy or cfg.train.critic_backup_combine_type != "min":
        raise ValueError(
            "dsrl_sac runs SB3's SAC: it needs train.backup_entropy=true and critic_backup_combine_type=min"
        )
    return SAC(DSRLSACPolicy, in_agent_spaces(cfg, env, base_policy), **kwargs)


def load_model(cfg: DictConfig, path: str, env: VecEnv, base_policy: NoisePolicy, device: torch.device | str):
    """A saved agent (``model_<env_steps>.zip``) of ``cfg.algorithm``, attached to ``env`` (the chunk env)."""
    if cfg.algorithm == "dsrl_na":
        return SACDiffusionNoise.load(
            path,
            env=dsrl_na_env(cfg, env, base_policy),
            device=device,
            base_policy=agent_policy(cfg, base_policy),
            cuda_graphs=cfg.train.cuda_graphs,
            torch_compile=cfg.train.torch_compile,
            autocast_bf16=cfg.train.autocast_bf16,
            overlap_env_steps=cfg.train.overlap_env_steps,
        )
    return SAC.load(path, env=in_agent_spaces(cfg, env, base_policy), device=device)


def load_agent(
    cfg: DictConfig, env: VecEnv, base_policy: NoisePolicy, device: torch.device, resume: Resume
) -> BaseAlgorithm:
    """The agent of a resumed run: its latest model and replay buffer, envs reseeded past the steps already run."""
    model = load_model(cfg, resume.model_path, env, base_policy, device)
    model.set_random_seed(cfg.seed + resume.counters["env_steps"])
    resume.restore_rng(model.device)
    if resume.replay_buffer_path:
        load_replay_buffer(model, resume.replay_buffer_path)
    else:
        log.warning(
            "%s saved no replay buffer (save_replay_buffer=false): the resumed run updates from its first step "
            "on an empty buffer, without the offline data or warm-up rollouts it began with",
            resume.run_dir,
        )
    return model


def prepare_renderer(suite: str) -> bool:
    """Choose MuJoCo's offscreen backend (``MUJOCO_GL``) before any simulator is imported or built.

    :return: whether videos can be recorded; False after one warning when no backend works
    """
    if suite not in MUJOCO_SUITES:
        return True
    tried = renderer_candidates()
    backend = find_renderer(tried)
    if backend is None:
        log.warning("no MuJoCo offscreen renderer works here (tried MUJOCO_GL=%s): no evaluation videos", tried)
        return False
    os.environ["MUJOCO_GL"] = backend
    return True


def make_video(
    cfg: DictConfig, env_cfg: dict[str, Any], normalizer: Normalizer, base_policy: NoisePolicy, run_dir: str, wandb_run
) -> EvalVideo:
    """The evaluation-video recorder on one rendering env (call :func:`prepare_renderer` first)."""
    venv = make_vec_env(env_cfg, normalizer, base_policy.chunk, base_policy.cond_steps, 1, render=True)
    fps = cfg.video.fps or venv.envs[0].unwrapped.metadata.get("render_fps", 20)
    env = in_agent_spaces(cfg, venv, base_policy)
    on_video = partial(log_file_artifact, wandb_run, "video") if cfg.wandb.log_videos else None
    return EvalVideo(env, cfg.video.every_evals, os.path.join(run_dir, "videos"), int(fps), wandb_run, on_video)


def log_base_policy(
    cfg: DictConfig, logger: Logger, base_policy: NoisePolicy, env: VecEnv, seed: int, stop_request: StopRequest
) -> None:
    """Evaluate the base policy alone at each ``eval.base_policy_noise_scales`` on ``env`` (the chunk eval env),
    on the evaluation episodes of ``seed``; log the results at env step 0.

    :raises RunInterrupted: ``stop_request`` recorded a signal first (nothing is logged)
    """
    scales = list(cfg.eval.base_policy_noise_scales)
    log.info("the base policy alone at noise x %s, %d episodes each", scales, cfg.eval.n_episodes)
    try:
        metrics = evaluate_base_policy(base_policy, env, scales, cfg.eval.n_episodes, seed, stop_request.requested)
    except EvaluationStopped:
        raise RunInterrupted(
            stop_request.signal,
            f"stopped by {stop_request.signal.name} while evaluating the base policy alone, before training: "
            "nothing was trained or logged; run the command again",
        ) from None
    for key, value in {ENV_STEPS: 0, **metrics}.items():
        logger.record(key, value)
    log.info("%s", ", ".join(f"{key} {value:.4g}" for key, value in metrics.items()))
    logger.dump(0)


def run(cfg: DictConfig) -> dict[str, float]:
    """Train DSRL as configured (or continue ``cfg.resume``); returns the final evaluation.

    :return: success_rate (tasks that report success), return_mean, return_std
        of the actor's mean noise
    :raises RunInterrupted: SIGINT or SIGTERM stopped it (after a checkpoint; see :mod:`dsrl.interrupts`)
    """
    check_run_config(cfg)
    env_cfg = OmegaConf.to_container(cfg.env, resolve=True)
    check_env_config(env_cfg)
    resume = load_resume(user_path(cfg.resume), cfg) if cfg.resume else None
    finishing = resume is not None and resume.counters["env_steps"] >= cfg.train.total_env_steps
    if finishing and not resume.counters.get("stopped", 0):
        raise ValueError(
            f"resume={cfg.resume!r} has already run {resume.counters['env_steps']} env steps >= "
            f"train.total_env_steps={cfg.train.total_env_steps}; raise train.total_env_steps to continue it"
        )
    device = training_device(cfg)
    run_dir = resume.run_dir if resume else user_path(cfg.run_dir)

    base_cfg = base_policy_config(cfg)
    check_observations(env_cfg, base_cfg)
    base_policy = load_base_policy(base_cfg, device)
    normalizer = Normalizer.load(user_path(base_cfg["normalization"]))
    normalizer.require_dims(base_policy.obs_dim, base_policy.action_dim, "base_policy.normalization")
    chunk, cond_steps = base_policy.chunk, base_policy.cond_steps

    os.makedirs(run_dir, exist_ok=True)
    if not resume:
        save_run_config(run_dir, cfg)
    videos = bool(cfg.video.every_evals) and prepare_renderer(env_cfg["suite"])
    env = make_vec_env(env_cfg, normalizer, chunk, cond_steps, env_cfg["n_envs"])
    eval_env = chunk_eval_env = make_vec_env(env_cfg, normalizer, chunk, cond_steps, env_cfg["n_eval_envs"])
    eval_seed = cfg.seed + 10_000
    wandb_run, video = None, None
    try:
        if resume:
            model = load_agent(cfg, env, base_policy, device, resume)
        else:
            model = build_agent(cfg, env, base_policy, device)
        eval_env = in_agent_spaces(cfg, eval_env, base_policy)
        if cfg.train.load_offline_data and not resume:
            if cond_steps != 1:
                raise ValueError(
                    f"train.load_offline_data needs a base policy of one observation (base_policy.cond_steps="
                    f"{cond_steps}): offline transitions hold single dataset steps"
                )
            data_path = user_path(cfg.train.load_offline_data)
            data = load_in_policy_bounds(data_path, normalizer)
            encoder = base_policy if cfg.train.agent_obs == "policy_embedding" else None
            step_obs = agent_observations(data, normalizer, encoder)
            transitions = chunk_transitions(data, step_obs, chunk, cfg.env.reward_offset)
            log.info("added %d offline transitions", add_to_replay_buffer(model.replay_buffer, transitions))
        logger, wandb_run = make_logger(
            cfg,
            run_dir,
            resume_env_steps=resume.counters["env_steps"] if resume else None,
            resume_timesteps=model.num_timesteps if resume else None,
            wandb_run_id=resume.wandb_run_id if resume else None,
        )
        model.set_logger(logger)
        video = make_video(cfg, env_cfg, normalizer, base_policy, run_dir, wandb_run) if videos else None
        checkpoint_dir = os.path.join(run_dir, "checkpoints")
        checkpointer = Checkpointer(checkpoint_dir, cfg.save_replay_buffer, cfg.keep_checkpoints)
        if resume:
            for name in checkpointer.discard_uncommitted():
                log.info("deleted %s, left by a save that did not finish", os.path.join(checkpoint_dir, name))
        stop_request = StopRequest()
        callback = DSRLCallback(
            eval_env,
            total_env_steps=cfg.train.total_env_steps,
            eval_interval=cfg.eval.interval_env_steps,
            eval_episodes=cfg.eval.n_episodes,
            eval_stochastic=cfg.eval.stochastic,
            save_interval=cfg.save_model_interval,
            checkpointer=checkpointer,
            seed=eval_seed,
            wandb_run_id=wandb_run.id if wandb_run else resume.wandb_run_id if resume else None,
            video=video,
            resume=resume,
            progress_bar=cfg.progress_bar,
            stop_request=stop_request,
            on_checkpoint=partial(log_file_artifact, wandb_run, "model") if cfg.wandb.log_checkpoints else None,
        )
        with stop_request:
            if cfg.eval.base_policy_noise_scales and not resume:
                log_base_policy(cfg, logger, base_policy, chunk_eval_env, eval_seed, stop_request)
            if finishing:
                steps = resume.counters["env_steps"]
                log.info("%s was stopped after all its %d env steps: its final evaluation", run_dir, steps)
            try:
                model.learn(  # SB3 counts on from the resumed model's steps; the callback stops at total_env_steps
                    total_timesteps=0 if finishing else cfg.train.total_env_steps,
                    callback=callback,
                    log_interval=cfg.log_interval,
                    reset_num_timesteps=resume is None,
                )
            except WORKER_ERRORS as exc:
                latest = callback.checkpointer.latest()
                raise RuntimeError(
                    f"an environment worker process died ({type(exc).__name__}: {exc}) at env step "
                    f"{callback.env_steps}; the run directory {run_dir} is intact, latest checkpoint: "
                    f"{latest['model'] if latest else 'none yet'} (continue with resume={run_dir})"
                ) from exc
        if callback.stopped_by is not None:
            raise RunInterrupted(
                callback.stopped_by,
                f"stopped by {callback.stopped_by.name} at env step {callback.env_steps}, checkpoint saved in "
                f"{checkpoint_dir} (continue with resume={run_dir})",
            )
        return callback.last_eval
    finally:
        if wandb_run is not None:
            finish_wandb_run(wandb_run)
        close_envs(env, eval_env, *([video.env] if video else []))


def close_envs(*envs: VecEnv) -> None:
    """Close VecEnvs; the processes of one whose worker died (its close fails) are killed instead (SIGKILL: the
    workers ignore SIGTERM, see :func:`~dsrl.interrupts.ignoring_stop_signals`)."""
    for venv in envs:
        try:
            venv.close()
        except WORKER_ERRORS:
            for process in venv.unwrapped.processes:
                process.kill()
                process.join()
