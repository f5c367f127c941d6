"""Evaluate a base policy alone (at its own or a scaled noise), a constant noise, or a trained DSRL agent on a task.

    python scripts/evaluate.py --config cfg/robomimic/dsrl_can.yaml --episodes 100
    python scripts/evaluate.py --config cfg/robomimic/dsrl_can.yaml --constant-noise 0.0
    python scripts/evaluate.py --config cfg/robomimic/dsrl_lift.yaml --noise-scale 0.5
    python scripts/evaluate.py --config cfg/robomimic/dsrl_can.yaml --agent runs/.../checkpoints/model_100000.zip
    python scripts/evaluate.py --config cfg/robomimic/dsrl_can.yaml --agent runs/.../model_100000.zip --sampled

Extra arguments are config overrides (``base_policy.checkpoint=...``). An
agent is evaluated in the settings it was trained in: its run's config.yaml
(two folders above the checkpoint) with the overrides; ``--config`` may be
left out, and if given must agree with the run on :data:`AGENT_SETTINGS`
(a difference is named). It plays its actor's mean noise (a run's
``eval/success_rate``), or with ``--sampled`` noise drawn from its actor
(``eval/stochastic_success_rate``, the DSRL authors' metric), seeded by ``--seed``.
Prints the success rate and mean return with 95% confidence intervals;
``--json`` writes them to a file, ``--video`` one more episode as an mp4.
"""

from __future__ import annotations

import argparse
import glob
import math
import os

import torch
from omegaconf import DictConfig, OmegaConf

from dsrl.base_policies import Normalizer, load_base_policy
from dsrl.config import base_policy_config, compose_task_config, repo_path, shown_path, user_path
from dsrl.envs.factory import check_observations, make_vec_env
from dsrl.evaluation import BasePolicyAgent, ConstantNoiseAgent, evaluate
from dsrl.files import write_json
from dsrl.settings import CONFIG, first_difference, selected_settings
from dsrl.training import in_agent_spaces, load_model, make_video, prepare_renderer

AGENT_SETTINGS = (
    "algorithm",
    "env.suite",
    "env.name",
    "env.kwargs",
    "env.max_episode_steps",
    "env.reward_offset",
    "base_policy",
    "train.action_magnitude",
    "train.noise_action_dim",
    "train.noise_expansion",
    "train.agent_obs",
)
"""What a trained agent plays through: its task, base policy and noise space (its networks and
hyperparameters are in its checkpoint)."""
AGENT_SPACES = (
    "algorithm",
    "train.action_magnitude",
    "train.noise_action_dim",
    "train.noise_expansion",
    "train.agent_obs",
)
"""The settings its networks' input and output spaces are built from: an override of them cannot apply."""


def agent_config(agent: str, config_file: str | None, overrides: list[str]) -> tuple[DictConfig, str]:
    """The config an agent was trained in (its run's config.yaml over ``config_file``, or over the defaults of
    every task when None, which fill in settings newer than the run) with ``overrides``, and that file's path.

    :raises FileNotFoundError: the checkpoint does not exist or is not in its run's ``checkpoints/`` folder
    :raises ValueError: an override changes one of :data:`AGENT_SPACES`, or ``config_file`` (with the same
        overrides) differs from the run on :data:`AGENT_SETTINGS`
    """
    if not os.path.isfile(agent):
        saved = [
            os.path.basename(f) for f in sorted(glob.glob(os.path.join(os.path.dirname(agent) or ".", "model_*.zip")))
        ]
        raise FileNotFoundError(f"--agent {agent} does not exist; its folder holds {saved or 'no model_*.zip'}")
    run_config = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(agent))), CONFIG)
    if not os.path.isfile(run_config):
        raise FileNotFoundError(
            f"--agent {agent}: no {run_config}; keep the checkpoint in its run's checkpoints/ folder, whose "
            f"{CONFIG} says which task, base policy and noise space it was trained with"
        )
    cfg = compose_task_config(config_file or repo_path("dsrl/conf/dsrl_base.yaml"), ["run_dir=unused"])
    OmegaConf.set_struct(cfg, False)
    cfg = OmegaConf.merge(cfg, OmegaConf.load(run_config))  # a setting newer than the run keeps today's default
    OmegaConf.set_struct(cfg, True)  # an override of a key that does not exist is an error
    trained = cfg
    cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(overrides))
    difference = first_difference(*(selected_settings(c, AGENT_SPACES) for c in (trained, cfg)))
    if difference:
        key, was, now = difference
        raise ValueError(
            f"--agent {agent} acts in the noise space it was trained in ({key}={was!r}, {run_config}); "
            f"the override {key}={now!r} cannot apply"
        )
    if config_file:
        given = compose_task_config(config_file, ["run_dir=unused", *overrides])
        difference = first_difference(*(selected_settings(c, AGENT_SETTINGS) for c in (cfg, given)))
        if difference:
            key, trained, now = difference
            raise ValueError(
                f"--agent {agent} was trained with {key}={trained!r} ({run_config}), --config {config_file} has "
                f"{now!r}: leave out --config to evaluate the agent as it was trained (overrides such as "
                f"{key}=... change a setting)"
            )
    return cfg, run_config


def confidence_interval(mean: float, std: float, n: int) -> float:
    """Half-width of the normal-approximation 95% interval of a mean."""
    return 1.96 * std / math.sqrt(n)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--config", default=None, help="DSRL task config (e.g. cfg/robomimic/dsrl_can.yaml); with --agent, optional"
    )
    parser.add_argument("--episodes", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0, help="seed of the evaluation episodes and of the noise")
    parser.add_argument("--n-envs", type=int, default=None, help="parallel envs (default: the config's n_eval_envs)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--constant-noise", type=float, default=None, help="feed this constant noise value")
    mode.add_argument("--agent", default=None, help="a DSRL-NA checkpoint (model_<steps>.zip) to evaluate")
    mode.add_argument(
        "--noise-scale",
        type=float,
        default=None,
        help="the base policy with its clipped N(0, I) noise times this factor (a lower sampling temperature)",
    )
    parser.add_argument(
        "--sampled", action="store_true", help="with --agent: noise sampled from the actor instead of its mean"
    )
    parser.add_argument("--json", default=None, help="write the results to this file")
    parser.add_argument("--video", default=None, help="record one more (deterministic) episode to this mp4 file")
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. base_policy.checkpoint=PATH")
    args = parser.parse_args()
    if args.sampled and not args.agent:
        parser.error("--sampled needs --agent (the base policy's own noise is always sampled)")
    if not args.config and not args.agent:
        parser.error("--config is needed to evaluate a base policy or a constant noise")

    if args.agent:
        cfg, config_used = agent_config(args.agent, args.config, args.overrides)
    else:  # the base policy's own agents act in action chunks
        cfg, config_used = (
            compose_task_config(args.config, ["run_dir=unused", "algorithm=dsrl_na", *args.overrides]),
            args.config,
        )
    base_cfg = base_policy_config(cfg)
    env_cfg = OmegaConf.to_container(cfg.env, resolve=True)
    check_observations(env_cfg, base_cfg)
    policy = load_base_policy(base_cfg)
    normalizer = Normalizer.load(user_path(base_cfg["normalization"]))
    venv = make_vec_env(env_cfg, normalizer, policy.chunk, policy.cond_steps, args.n_envs or env_cfg["n_eval_envs"])
    if args.agent:
        agent, mode, deterministic = load_model(cfg, args.agent, venv, policy, "cpu"), "agent", not args.sampled
        venv = in_agent_spaces(cfg, venv, policy)
    elif args.constant_noise is not None:
        agent, mode, deterministic = ConstantNoiseAgent(policy, args.constant_noise), "constant_noise", True
    else:
        scale = 1.0 if args.noise_scale is None else args.noise_scale
        agent, mode, deterministic = BasePolicyAgent(policy, seed=args.seed, scale=scale), "base_policy", False
    torch.manual_seed(args.seed)  # after loading an agent, whose set-up seeds torch with its run's seed
    result = evaluate(agent, venv, args.episodes, deterministic, seed=args.seed)
    venv.close()
    n = args.episodes
    summary = {
        "mode": mode,
        "config": shown_path(config_used),
        "task": cfg.env.name,
        "checkpoint": shown_path(args.agent or base_cfg["checkpoint"]),
        "episodes": n,
        "seed": args.seed,
        **({"noise_scale": args.noise_scale} if args.noise_scale is not None else {}),
        **({"constant_noise": args.constant_noise} if args.constant_noise is not None else {}),
        **({"noise": "sampled" if args.sampled else "mean"} if args.agent else {}),
        "return_mean": result["return_mean"],
        "return_ci95": confidence_interval(result["return_mean"], result["return_std"], n),
    }
    line = f"return {result['return_mean']:.2f} ± {summary['return_ci95']:.2f}"
    if "success_rate" in result:
        success = result["success_rate"]
        summary["success_rate"] = success
        summary["success_rate_ci95"] = confidence_interval(success, math.sqrt(success * (1 - success)), n)
        line = f"success rate {success:.3f} ± {summary['success_rate_ci95']:.3f}, {line}"
    label = mode
    if args.agent:
        label = f"agent ({summary['noise']} noise)"
    elif args.noise_scale is not None:
        label = f"base_policy (noise x {args.noise_scale:g})"
    print(f"{label}: {line} (95% CI, {n} episodes, seed {args.seed})")
    if args.json:
        write_json(args.json, summary, indent=2)
    if args.video and prepare_renderer(env_cfg["suite"]):
        video = make_video(OmegaConf.merge(cfg, {"video": {"every_evals": 1}}), env_cfg, normalizer, policy, ".", None)
        if video.save(agent, args.video):
            print(f"video: {args.video}")
        video.env.close()


if __name__ == "__main__":
    main()
