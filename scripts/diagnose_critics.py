"""Where a DSRL-NA run's critics disagree: Q_W and Q_A at the actor's noise, at zero noise and at N(0, I) noise.

    python scripts/diagnose_critics.py runs/results/can_fresh/seed0
    python scripts/diagnose_critics.py RUN_DIR --states 1024 --recent 5000 --json critics.json

Loads the run's latest checkpoint and replay buffer (the run must have kept
it: ``save_replay_buffer: true``, the default), draws ``--states``
observations from its ``--recent`` newest transitions and prints, for each
kind of noise w, the noise critic Q_W(s, w) and the action critic
Q_A(s, pi_dp(s, w)) of the chunk the base policy makes of w (each combined
over its ensemble as the run combines it), averaged over those states, and
their gap Q_W - Q_A. Q_W well above Q_A at the actor's noise: the actor
exploits the noise critic. Q_A higher at the actor's noise than at a noise
that does better in the simulator (zero noise on Lift succeeds every time,
scripts/evaluate.py --constant-noise 0): the action critic overrates the
actor's chunks.
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np
import torch
from omegaconf import OmegaConf
from rich.console import Console
from rich.table import Table

from dsrl.algorithms.sac_diffusion_noise import SACDiffusionNoise, combine
from dsrl.base_policies import load_base_policy
from dsrl.checkpointing import CONFIG, load_resume
from dsrl.config import base_policy_config
from dsrl.replay_files import load_replay_buffer
from dsrl.training import agent_policy


def noise_kinds(model: SACDiffusionNoise, obs: torch.Tensor) -> dict[str, torch.Tensor]:
    """Noise (B, noise_dim) scaled to [-1, 1] of each kind: the actor's mean and sample, zero, clipped N(0, I)."""
    return {
        "actor mean": model.actor(obs, deterministic=True),
        "actor sample": model.actor(obs),
        "zero": torch.zeros(len(obs), model.noise_space.shape[0]),
        "N(0, I) clipped": model.distillation_noise(len(obs)),
    }


@torch.no_grad()
def critic_values(model: SACDiffusionNoise, obs: torch.Tensor) -> dict[str, dict[str, float]]:
    """Mean combined Q_W(s, w), Q_A(s, pi_dp(s, w)) and their gap over ``obs`` (B, obs_dim), per kind of noise."""
    how = model.critic_backup_combine_type
    values = {}
    for kind, scaled in noise_kinds(model, obs).items():
        q_w = combine(model.noise_critic.all_q(obs, scaled), how).mean().item()
        q_a = combine(model.critic.all_q(obs, model.denoise(obs, scaled)), how).mean().item()
        values[kind] = {"q_w": q_w, "q_a": q_a, "gap": q_w - q_a}
    return values


def load_run(run_dir: str) -> SACDiffusionNoise:
    """The latest checkpoint of DSRL-NA run ``run_dir`` on the CPU, with its replay buffer."""
    config_path = os.path.join(run_dir, CONFIG)
    if not os.path.isfile(config_path):
        raise ValueError(f"{run_dir!r} is not a DSRL run directory (it has no {CONFIG})")
    cfg = OmegaConf.load(config_path)
    if cfg.algorithm != "dsrl_na":
        raise ValueError(f"{run_dir!r} ran algorithm={cfg.algorithm}, which has no noise critic (needs dsrl_na)")
    resume = load_resume(run_dir, cfg)
    if resume.replay_buffer_path is None:
        raise ValueError(f"{run_dir!r} kept no replay buffer (save_replay_buffer=false): no stored states to score")
    base_cfg = base_policy_config(cfg)
    policy = agent_policy(cfg, load_base_policy(base_cfg))
    model = SACDiffusionNoise.load(resume.model_path, base_policy=policy, device="cpu")
    load_replay_buffer(model, resume.replay_buffer_path)
    return model


def recent_observations(model: SACDiffusionNoise, states: int, recent: int, seed: int) -> torch.Tensor:
    """``states`` observations (states, obs_dim) drawn from the ``recent`` newest rows of the replay buffer."""
    buffer = model.replay_buffer
    filled = buffer.buffer_size if buffer.full else buffer.pos
    window = min(recent, filled)
    rng = np.random.default_rng(seed)
    rows = (buffer.pos - window + rng.integers(0, window, states)) % buffer.buffer_size
    slots = rng.integers(0, buffer.n_envs, states)
    return torch.as_tensor(buffer.observations[rows, slots], dtype=torch.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", help="a DSRL-NA run directory (with config.yaml and checkpoints/)")
    parser.add_argument("--states", type=int, default=512, help="stored observations to score")
    parser.add_argument("--recent", type=int, default=2000, help="drawn from this many newest replay rows")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="write the values to this file")
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    model = load_run(args.run_dir)
    values = critic_values(model, recent_observations(model, args.states, args.recent, args.seed))
    learnt = model.ent_coef_optimizer is not None
    ent_coef = float(torch.exp(model.log_ent_coef.detach()) if learnt else model.ent_coef_tensor)
    table = Table(
        title=f"{args.run_dir}: {args.states} of the {args.recent} newest stored states, ent_coef {ent_coef:.4g}"
    )
    for column in ("noise", "Q_W(s, w)", "Q_A(s, pi_dp(s, w))", "Q_W - Q_A"):
        table.add_column(column, justify="left" if column == "noise" else "right")
    for kind, v in values.items():
        table.add_row(kind, f"{v['q_w']:.2f}", f"{v['q_a']:.2f}", f"{v['gap']:+.2f}")
    Console().print(table)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"run_dir": args.run_dir, "ent_coef": ent_coef, "noise": values}, f, indent=2)


if __name__ == "__main__":
    main()
