"""scripts/diagnose_critics.py: Q_W and Q_A of a stopped DSRL-NA run at several kinds of noise."""

import json
import os
import sys

import numpy as np
import pytest
import torch
from conftest import REPO_ROOT, STEERING_CONFIG, run_script
from stable_baselines3 import SAC
from test_training import steering_config

from dsrl.algorithms.sac_diffusion_noise import combine
from dsrl.training import run

sys.path.insert(0, os.path.join(REPO_ROOT, "scripts"))
from diagnose_critics import (  # noqa: E402
    critic_values,
    load_run,
    observed_returns,
    recent_observations,
    returns_to_episode_end,
    soft_rewards,
)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("steering_run")
    run(
        steering_config(
            directory,
            "train.total_env_steps=800",
            "train.init_rollout_steps=25",
            "train.layer_size=32",
            "eval.interval_env_steps=0",
            "eval.n_episodes=2",
        )
    )
    return directory


def test_critic_values_score_the_chunks_the_base_policy_makes_of_each_noise(run_dir):
    torch.manual_seed(0)
    model = load_run(str(run_dir))
    obs = recent_observations(model, 64, 200, seed=0)
    assert obs.shape == (64, 2)
    values = critic_values(model, obs)
    assert list(values) == ["actor mean", "actor sample", "zero", "N(0, I) clipped"]
    base = model.base_policy
    with torch.no_grad():
        noise = model.actor(obs, deterministic=True) * model.action_magnitude  # unscaled, as the base policy takes it
        chunks = base(obs, noise.view(-1, base.chunk, base.action_dim)).reshape(64, -1)
        expected_q_a = combine(model.critic.all_q(obs, chunks), "min").mean().item()
    assert values["actor mean"]["q_a"] == pytest.approx(expected_q_a, rel=1e-5)

    def overrated(obs, scaled_noise):  # Q_W = Q_A of the chunk the noise denoises to, plus 2.5
        return model.critic.all_q(obs, model.denoise(obs, scaled_noise)) + 2.5

    model.noise_critic.all_q = overrated
    for kind, v in critic_values(model, obs).items():
        assert v["gap"] == pytest.approx(2.5, abs=1e-4), kind


def test_command_prints_and_writes_the_values(run_dir, tmp_path):
    out = tmp_path / "critics.json"
    result = run_script(
        "scripts/diagnose_critics.py", str(run_dir), "--states", "64", "--recent", "200", "--json", str(out)
    )
    assert result.returncode == 0, result.stderr
    assert "actor mean" in result.stdout and "Q_W - Q_A" in result.stdout and "share of Q_A above" in result.stdout
    written = json.loads(out.read_text())
    model = load_run(str(run_dir))
    expected = critic_values(model, recent_observations(model, 64, 200, seed=0))
    for kind in ("actor mean", "zero"):  # the kinds that draw no random numbers
        assert written["noise"][kind] == pytest.approx(expected[kind], rel=1e-5)
    assert written["ent_coef"] == pytest.approx(float(torch.exp(model.log_ent_coef.detach())), rel=1e-6)
    assert written["observed"] == pytest.approx(observed_returns(model, 64, 200, seed=0), rel=1e-5)


def test_a_dsrl_sac_run_gets_the_observed_return_table_only(tmp_path):
    run(
        steering_config(
            tmp_path,
            "algorithm=dsrl_sac",
            "train.total_env_steps=800",
            "train.init_rollout_steps=25",
            "train.layer_size=32",
            "eval.interval_env_steps=0",
            "eval.n_episodes=2",
        )
    )
    out = tmp_path / "critics.json"
    result = run_script(
        "scripts/diagnose_critics.py", str(tmp_path), "--states", "64", "--recent", "200", "--json", str(out)
    )
    assert result.returncode == 0, result.stderr
    assert "share of Q_A above" in result.stdout and "Q_W - Q_A" not in result.stdout
    written = json.loads(out.read_text())
    assert "noise" not in written
    model = load_run(str(tmp_path))
    assert type(model) is SAC
    assert written["observed"] == pytest.approx(observed_returns(model, 64, 200, seed=0), rel=1e-5)
    observed = written["observed"]
    assert observed["transitions"] == 64 and observed["return_lower"] <= observed["return_upper"]


def test_returns_to_episode_end_discount_each_stored_episode_and_bound_what_follows_a_time_limit():
    # one env slot: an episode cut off by the time limit after 2 transitions, one ended by a terminal after 3, and
    # one still running
    rewards = np.array([[-1.0], [-2.0], [-1.0], [0.0], [5.0], [-1.0]])
    dones = np.array([[0], [1], [0], [0], [1], [0]], dtype=float)
    truncated = np.array([[0], [1], [0], [0], [0], [0]], dtype=float)
    returns, left, finished = returns_to_episode_end(rewards, dones, truncated, gamma=0.5)
    np.testing.assert_allclose(returns.ravel()[:5], [-1 - 0.5 * 2, -2, -1 + 0.25 * 5, 2.5, 5])
    np.testing.assert_allclose(left.ravel()[:5], [0.25, 0.5, 0, 0, 0])
    np.testing.assert_array_equal(finished.ravel(), [True] * 5 + [False])


def test_observed_returns_bound_the_steering_runs_stored_episodes(run_dir):
    model = load_run(str(run_dir))
    observed = observed_returns(model, 64, 200, seed=0)
    assert observed["transitions"] == 64
    assert observed["return_lower"] <= observed["return_upper"]
    assert 0.0 <= observed["return_lower"] and observed["return_upper"] <= 1.0 / (1 - model.gamma)  # rewards 0 or 1
    assert 0.0 <= observed["share_above_upper"] <= 1.0
    with pytest.raises(ValueError, match="no episode has finished in the 0 newest replay rows"):
        observed_returns(model, 64, 0, seed=0)


def test_soft_rewards_add_the_discounted_bonus_of_the_next_state_except_after_a_terminal():
    rewards = np.array([[-1.0], [-2.0], [-1.0], [0.0]])
    bonuses = np.array([[0.5], [0.25], [1.0], [2.0]])
    dones = np.array([[0], [1], [0], [1]], dtype=float)
    truncated = np.array([[0], [1], [0], [0]], dtype=float)  # row 1: a time limit (bootstrapped), row 3: a terminal
    soft = soft_rewards(rewards, bonuses, dones, truncated, gamma=0.5)
    np.testing.assert_allclose(soft.ravel(), [-1 + 0.25, -2 + 0.125, -1 + 0.5, 0.0])


def test_soft_returns_hold_the_entropy_bonus_the_td_target_adds(run_dir):
    model = load_run(str(run_dir))
    assert model.replay_buffer.handle_timeout_termination
    model.replay_buffer.timeouts[:] = model.replay_buffer.dones  # every end a bootstrapped time limit, no terminal
    hard_only = observed_returns(model, 64, 200, seed=0)
    assert observed_returns(model, 64, 200, seed=0) == hard_only  # the bonuses' noise is seeded
    ent_coef = float(torch.exp(model.log_ent_coef.detach()))
    model.actor.action_log_prob = lambda obs: (torch.zeros(len(obs), 1), torch.full((len(obs),), -3.0))
    constant = observed_returns(model, 64, 200, seed=0)  # bonus 3 ent_coef at every next state
    for key in ("q_a", "return_lower", "return_upper", "share_above_upper"):
        assert constant[key] == hard_only[key]
    bonus = 3 * ent_coef * model.gamma  # per transition, and per step of the unknown rest
    assert constant["soft_return_upper"] - constant["return_upper"] == pytest.approx(bonus / (1 - model.gamma))
    assert constant["soft_return_lower"] - constant["return_lower"] == pytest.approx(bonus / (1 - model.gamma))
    model.backup_entropy = False
    without = observed_returns(model, 64, 200, seed=0)
    assert without["soft_return_upper"] == pytest.approx(without["return_upper"])
    assert without["share_above_soft_upper"] == without["share_above_upper"]


def test_a_frozen_actor_run_keeps_its_initial_actor_while_the_critics_learn(tmp_path):
    result = run_script(
        "scripts/frozen_actor_run.py",
        f"--config-path={os.path.dirname(STEERING_CONFIG)}",
        f"--config-name={os.path.basename(STEERING_CONFIG)}",
        f"run_dir={tmp_path}",
        "wandb.mode=disabled",
        "train.total_env_steps=800",
        "train.init_rollout_steps=25",
        "train.layer_size=32",
        "train.actor_zero_init=true",
        "eval.interval_env_steps=0",
        "eval.n_episodes=2",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    model = load_run(str(tmp_path))
    assert model._n_updates > 0  # the critics took gradient steps
    mean, log_std, _ = model.actor.get_action_dist_params(torch.rand(64, 2) * 2 - 1)
    assert mean.abs().max() == 0 and log_std.abs().max() == 0  # the zero-initialised actor, untouched
