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

A second table holds Q_A against what happened: over ``--states`` stored
transitions (s, a) of finished episodes among the ``--recent`` newest rows,
Q_A(s, a) against the discounted return the stored episode went on to earn.
After an episode cut off by the time limit (and bootstrapped,
``train.bootstrap_time_limit: true``) the rest is unknown, so the return is
bounded by the buffer's smallest and largest reward per agent step repeated
forever; after a terminal, and with ``bootstrap_time_limit: false``, the
bounds meet. Q_A above the upper bound overrates the chunks the agent played.
The TD target also adds SAC's entropy bonus, ``ent_coef`` x -log pi(w' | s')
at each next state s' (unless ``train.backup_entropy: false``), which the
rewards do not hold, so the table gives the soft return too: each stored
reward plus gamma times the bonus of the run's current actor and coefficient
at that transition's next observation (the mean over ``--bonus-samples``
noises; none after a terminal), bounded after a time limit by the buffer's
smallest and largest reward plus gamma times the window's smallest and largest
bonus. Q_A above the soft upper bound overrates the played chunks whatever the
entropy term adds. A DSRL-SAC run has no noise critic and gets this second
table only, with its critic's Q(s, w) of the stored noise.
"""

from __future__ import annotations

import argparse
import os

import numpy as np
import torch
from omegaconf import OmegaConf
from rich.console import Console
from rich.table import Table
from stable_baselines3 import SAC

from dsrl.algorithms.sac_diffusion_noise import SACDiffusionNoise, combine
from dsrl.base_policies import load_base_policy
from dsrl.checkpointing import load_resume
from dsrl.config import base_policy_config
from dsrl.files import write_json
from dsrl.replay_files import load_replay_buffer
from dsrl.settings import CONFIG
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


def returns_to_episode_end(
    rewards: np.ndarray, dones: np.ndarray, truncated: np.ndarray, gamma: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per transition, what its stored episode earned from it on; arrays (rows, n_envs), oldest row first.

    :param rewards: reward of each transition
    :param dones: the transition ended its episode (terminal or time limit)
    :param truncated: it ended it at the time limit, with the rest of the episode unknown
    :param gamma: discount per transition
    :return: the discounted return to the episode's end, the discount left after that end (0 after a terminal,
        gamma ** (transitions to the end) after a truncation), and whether the episode ends within the rows
    """
    returns, left = np.zeros(rewards.shape), np.zeros(rewards.shape)
    acc, discount = np.zeros(rewards.shape[1]), np.zeros(rewards.shape[1])
    for row in range(len(rewards) - 1, -1, -1):
        end = dones[row] > 0
        acc = np.where(end, 0.0, acc)
        discount = np.where(end, (truncated[row] > 0).astype(float), discount)
        returns[row] = acc = rewards[row] + gamma * acc
        left[row] = discount = gamma * discount
    finished = np.flip(np.logical_or.accumulate(np.flip(dones > 0, 0), 0), 0)  # an end at this row or a later one
    return returns, left, finished


def entropy_coefficient(model: SACDiffusionNoise | SAC) -> float:
    """The entropy coefficient the run trains with now (learnt or fixed)."""
    learnt = model.ent_coef_optimizer is not None
    return float(torch.exp(model.log_ent_coef.detach()) if learnt else model.ent_coef_tensor)


def soft_rewards(
    rewards: np.ndarray, bonuses: np.ndarray, dones: np.ndarray, truncated: np.ndarray, gamma: float
) -> np.ndarray:
    """Rewards (rows, n_envs) plus what the TD target adds to them: gamma x the entropy bonus at the next
    observation, ``bonuses`` (rows, n_envs), except after a terminal (a time limit, ``truncated``, bootstraps)."""
    terminal = (dones > 0) & ~(truncated > 0)
    return rewards + gamma * np.where(terminal, 0.0, bonuses)


@torch.no_grad()
def entropy_bonuses(model: SACDiffusionNoise | SAC, next_obs: np.ndarray, samples: int) -> np.ndarray:
    """``ent_coef`` x -log pi(w | s') of the model's actor at observations ``next_obs`` (..., obs_dim), the mean over
    ``samples`` noises each: the bonus its TD target adds at s' (0 for a DSRL-NA run with ``backup_entropy`` off;
    minus the KL sample to N(0, I) with ``kl_to_base_noise``)."""
    if not getattr(model, "backup_entropy", True):  # SB3's SAC always backs the entropy up
        return np.zeros(next_obs.shape[:-1])
    obs = torch.as_tensor(next_obs.reshape(-1, next_obs.shape[-1]), dtype=torch.float32)
    regularise = getattr(model, "regularised_log_prob", lambda noise, log_prob: log_prob)
    log_prob = torch.stack([regularise(*model.actor.action_log_prob(obs)).reshape(-1) for _ in range(samples)]).mean(0)
    return (-entropy_coefficient(model) * log_prob).numpy().reshape(next_obs.shape[:-1])


@torch.no_grad()
def observed_returns(
    model: SACDiffusionNoise | SAC, states: int, recent: int, seed: int, bonus_samples: int = 4
) -> dict[str, float]:
    """Mean Q_A(s, a) over ``states`` stored transitions of finished episodes in the ``recent`` newest rows, and the
    bounds of the discounted return, hard and soft, their episodes earned (see the module docstring). For
    DSRL-SAC, its critic's Q(s, w) of the stored (SB3-scaled) noise w stands in for Q_A."""
    buffer = model.replay_buffer
    filled = buffer.buffer_size if buffer.full else buffer.pos
    oldest_first = (np.arange(filled) + (buffer.pos if buffer.full else 0)) % buffer.buffer_size
    window = oldest_first[max(filled - recent, 0) :]  # a return depends on its own and later rows only
    dones, rewards = buffer.dones[window], buffer.rewards[window]
    truncated = buffer.timeouts[window] if buffer.handle_timeout_termination else np.zeros_like(dones)
    hard, left, finished = returns_to_episode_end(rewards, dones, truncated, model.gamma)
    with torch.random.fork_rng():  # the same bonuses for the same seed, whatever was drawn before
        torch.manual_seed(seed)
        bonuses = entropy_bonuses(model, buffer.next_observations[window], bonus_samples)
    soft = returns_to_episode_end(
        soft_rewards(rewards, bonuses, dones, truncated, model.gamma), dones, truncated, model.gamma
    )[0]
    rows, slots = np.nonzero(finished)
    if not len(rows):
        raise ValueError(f"no episode has finished in the {recent} newest replay rows: nothing to compare Q_A with")
    pick = np.random.default_rng(seed).choice(len(rows), min(states, len(rows)), replace=False)
    rows, slots = rows[pick], slots[pick]
    obs = torch.as_tensor(buffer.observations[window[rows], slots], dtype=torch.float32)
    actions = torch.as_tensor(buffer.actions[window[rows], slots], dtype=torch.float32)
    how = model.critic_backup_combine_type if isinstance(model, SACDiffusionNoise) else "min"  # SB3's SAC: min
    q_a = combine(model.critic.all_q(obs, actions), how).squeeze(1).numpy()
    forever = left[rows, slots] / (1 - model.gamma)  # after a time limit: a reward per step, forever
    worst, best = buffer.rewards[:filled].min(), buffer.rewards[:filled].max()  # the filled rows, in any order
    upper = hard[rows, slots] + forever * best
    soft_upper = soft[rows, slots] + forever * (best + model.gamma * bonuses.max())
    return {
        "transitions": len(rows),
        "q_a": float(q_a.mean()),
        "return_lower": float((hard[rows, slots] + forever * worst).mean()),
        "return_upper": float(upper.mean()),
        "share_above_upper": float((q_a > upper).mean()),
        "soft_return_lower": float((soft[rows, slots] + forever * (worst + model.gamma * bonuses.min())).mean()),
        "soft_return_upper": float(soft_upper.mean()),
        "share_above_soft_upper": float((q_a > soft_upper).mean()),
    }


def load_run(run_dir: str) -> SACDiffusionNoise | SAC:
    """The latest checkpoint of run ``run_dir`` on the CPU, with its replay buffer: DSRL-NA's model, or DSRL-SAC's
    SB3 ``SAC`` (its critic scores the stored noise; it has no noise critic)."""
    config_path = os.path.join(run_dir, CONFIG)
    if not os.path.isfile(config_path):
        raise ValueError(f"{run_dir!r} is not a DSRL run directory (it has no {CONFIG})")
    cfg = OmegaConf.load(config_path)
    resume = load_resume(run_dir, cfg)
    if resume.replay_buffer_path is None:
        raise ValueError(f"{run_dir!r} kept no replay buffer (save_replay_buffer=false): no stored states to score")
    if cfg.algorithm == "dsrl_na":
        policy = agent_policy(cfg, load_base_policy(base_policy_config(cfg)))
        model = SACDiffusionNoise.load(resume.model_path, base_policy=policy, device="cpu")
    else:
        model = SAC.load(resume.model_path, device="cpu")
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
    parser.add_argument("run_dir", help="a DSRL run directory (with config.yaml and checkpoints/)")
    parser.add_argument("--states", type=int, default=512, help="stored observations to score")
    parser.add_argument("--recent", type=int, default=2000, help="drawn from this many newest replay rows")
    parser.add_argument("--bonus-samples", type=int, default=4, help="noises per next state for the entropy bonus")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="write the values to this file")
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    model = load_run(args.run_dir)
    ent_coef = entropy_coefficient(model)
    summary = {"run_dir": args.run_dir, "ent_coef": ent_coef}
    if isinstance(model, SACDiffusionNoise):
        values = summary["noise"] = critic_values(
            model, recent_observations(model, args.states, args.recent, args.seed)
        )
        table = Table(
            title=f"{args.run_dir}: {args.states} of the {args.recent} newest stored states, ent_coef {ent_coef:.4g}"
        )
        for column in ("noise", "Q_W(s, w)", "Q_A(s, pi_dp(s, w))", "Q_W - Q_A"):
            table.add_column(column, justify="left" if column == "noise" else "right")
        for kind, v in values.items():
            table.add_row(kind, f"{v['q_w']:.2f}", f"{v['q_a']:.2f}", f"{v['gap']:+.2f}")
        Console().print(table)
    observed = summary["observed"] = observed_returns(model, args.states, args.recent, args.seed, args.bonus_samples)
    table = Table(
        title=f"Q_A of {observed['transitions']} stored transitions against their episodes' returns, "
        f"ent_coef {ent_coef:.4g}"
    )
    for column in ("return", "Q_A(s, a)", "lower bound", "upper bound", "share of Q_A above"):
        table.add_column(column, justify="left" if column == "return" else "right")
    for kind, prefix, share in (("hard", "", "share_above_upper"), ("soft", "soft_", "share_above_soft_upper")):
        values = observed["q_a"], observed[f"{prefix}return_lower"], observed[f"{prefix}return_upper"], observed[share]
        table.add_row(kind, *(f"{value:.2f}" for value in values))
    Console().print(table)
    if args.json:
        write_json(args.json, summary, indent=2)


if __name__ == "__main__":
    main()
