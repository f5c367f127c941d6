"""End to end: config checks, a Gym run's outputs, and DSRL solving the steering task."""

import csv
import dataclasses
import glob
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml
from conftest import HOPPER_CONFIG, STEERING_CONFIG

from dsrl.base_policies import Normalizer, load_base_policy
from dsrl.config import REPO_ROOT, compose_task_config, repo_path
from dsrl.envs.factory import make_vec_env
from dsrl.evaluation import BasePolicyAgent, ConstantNoiseAgent, evaluate
from dsrl.training import run


def steering_config(tmp_path, *overrides):
    return compose_task_config(STEERING_CONFIG, [f"run_dir={tmp_path}", "wandb.mode=disabled", *overrides])


@pytest.mark.parametrize(
    "override, message",
    [
        ("algorithm=ppo", "algorithm='ppo'"),
        ("train.action_magnitude=0", "train.action_magnitude=0"),
        ("train.utd=0", "train.utd=0"),
        ("train.target_critics=3", r"train.target_critics=3 must lie in \[0, train.n_critics=2\]"),
        ("wandb.mode=cloud", "wandb.mode='cloud'"),
        ("eval.base_policy_noise_scales=[1.0,-0.5]", r"eval.base_policy_noise_scales=\[1.0, -0.5\] holds -0.5"),
        ("train.noise_action_dim=9", r"train.noise_action_dim=9 is larger than the base policy's noise \(horizon"),
        ("train.noise_expansion=pca", "train.noise_expansion='pca'"),
        ("env.name=Hopper-v5", "env.name='Hopper-v5'"),
        ("base_policy.checkpoint=missing.pt", "base_policy.checkpoint='missing.pt' does not exist"),
        ("base_policy.normalization={hopper_normalization}", "normalization has obs_min of 11 dims, but .*obs_dim=2"),
        ("wandb.log_checkpoints=true", r"wandb.log_checkpoints=true logs W&B artifacts, but wandb.mode=disabled"),
        ("wandb.log_videos=true", r"wandb.log_videos=true logs W&B artifacts, but wandb.mode=disabled"),
        ("train.kl_prior_noise_scale=0", r"train.kl_prior_noise_scale=0 must be a finite number > 0"),
        ("train.action_magnitude=abc", "train.action_magnitude='abc' must be a finite number > 0"),
        ("train.action_magnitude=inf", "train.action_magnitude=inf must be a finite number > 0"),
        ("train.noise_action_dim=abc", r"train.noise_action_dim='abc' must be an integer \(<= 0: the full noise\)"),
        (
            "+train.utdd=5",
            r"train.utdd is not a setting \(dsrl/conf/dsrl_base.yaml lists every one\); did you mean train.utd\?",
        ),
        ("+evl.n_episodes=5", r"^evl is not a setting .*; did you mean eval\?"),
        ("train.actor_combine_type=max", "train.actor_combine_type='max' is not null, min or mean"),
        (
            "algorithm=dsrl_sac train.actor_combine_type=mean",
            "train.actor_combine_type=mean is DSRL-NA's; algorithm=dsrl_sac runs SB3's SAC, whose actor takes the min",
        ),
        (
            "train.kl_prior_noise_scale=0.5",
            r"train.kl_prior_noise_scale=0.5 scales the prior of train.kl_to_base_noise, which is false",
        ),
        ("base_policy.obs_dim=3", r"observes 2 numbers per step, but base_policy.obs_dim=3 \(a state policy"),
        (
            "base_policy.mlp_dims=[64,64,64]",
            r"key 'network.mlp_mean.layers.0.weight' has shape \(128, 26\), config expects \(64, 26\)",
        ),
    ],
)
def test_bad_config_fails_before_training_naming_field(tmp_path, hopper_files, override, message):
    override = override.format(hopper_normalization=hopper_files[1])
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        run(steering_config(tmp_path, *override.split()))
    assert not os.path.exists(tmp_path / "progress.csv")


def test_a_key_misspelt_in_a_config_file_is_refused_not_ignored(tmp_path):
    with open(STEERING_CONFIG) as f:
        text = f.read()
    assert "\n  utd: 4\n" in text
    (tmp_path / "typo.yaml").write_text(text.replace("\n  utd: 4\n", "\n  utdd: 4\n"))
    cfg = compose_task_config(str(tmp_path / "typo.yaml"), [f"run_dir={tmp_path}", "wandb.mode=disabled"])
    with pytest.raises(ValueError, match=r"^train.utdd is not a setting .*; did you mean train.utd\?$"):
        run(cfg)
    assert not os.path.exists(tmp_path / "progress.csv")


@pytest.mark.parametrize(
    "option, value",
    [
        (name, "true")
        for name in (
            "overlap_env_steps",
            "kl_to_base_noise",
            "torch_compile",
            "autocast_bf16",
            "precompute_distillation",
        )
    ]
    + [("load_offline_data", "'demos.npz'")],
)
def test_dsrl_na_options_are_refused_for_dsrl_sac(tmp_path, option, value):
    with pytest.raises(ValueError, match=f"train.{option}={value} is DSRL-NA's; algorithm=dsrl_sac runs SB3's SAC"):
        run(steering_config(tmp_path, "algorithm=dsrl_sac", f"train.{option}={value.strip(chr(39))}"))
    assert not os.path.exists(tmp_path / "progress.csv")


def test_shipped_steering_policy_succeeds_about_half_the_time():
    cfg = compose_task_config(STEERING_CONFIG, ["run_dir=unused"])
    policy = load_base_policy(dict(cfg.base_policy))
    normalizer = Normalizer.load(cfg.base_policy.normalization)
    env_cfg = dict(cfg.env)
    venv = make_vec_env(env_cfg, normalizer, policy.chunk, policy.cond_steps, 8)
    result = evaluate(BasePolicyAgent(policy, seed=0), venv, 400, deterministic=False, seed=1)
    assert 0.25 <= result["success_rate"] <= 0.65
    with open(repo_path("checkpoints/steering/diffusion/card.yaml")) as f:
        card_success = yaml.safe_load(f)["checkpoints"][-1]["success_rate"]
    assert abs(card_success - result["success_rate"]) < 0.08


def test_scaled_base_noise_shrinks_the_same_draws_and_at_zero_is_the_zero_noise_baseline():
    cfg = compose_task_config(STEERING_CONFIG, ["run_dir=unused"])
    policy = load_base_policy(dict(cfg.base_policy))
    own, half = BasePolicyAgent(policy, seed=5), BasePolicyAgent(policy, seed=5, scale=0.5)
    draws = own.noise(4096)
    torch.testing.assert_close(half.noise(4096), 0.5 * draws)
    assert draws.abs().max() <= 3.0 and draws.std().item() == pytest.approx(1.0, abs=0.02)

    venv = make_vec_env(
        dict(cfg.env), Normalizer.load(cfg.base_policy.normalization), policy.chunk, policy.cond_steps, 4
    )
    scaled_to_zero = evaluate(BasePolicyAgent(policy, seed=5, scale=0.0), venv, 40, deterministic=False, seed=2)
    assert scaled_to_zero == evaluate(ConstantNoiseAgent(policy, 0.0), venv, 40, deterministic=True, seed=2)


def test_base_policy_alone_is_evaluated_once_before_training_on_the_agents_episodes(tmp_path):
    quick = ["seed=3", "eval.interval_env_steps=0", "eval.n_episodes=30", "train.utd=1", "progress_bar=false"]
    cfg = steering_config(tmp_path, *quick, "eval.base_policy_noise_scales=[1.0,0]", "train.total_env_steps=600")
    run(cfg)
    policy = load_base_policy(dict(cfg.base_policy))
    normalizer = Normalizer.load(cfg.base_policy.normalization)
    venv = make_vec_env(dict(cfg.env), normalizer, policy.chunk, policy.cond_steps, cfg.env.n_eval_envs)
    eval_seed = 3 + 10_000  # the DSRL agent's evaluation episodes
    expected = {
        name: evaluate(BasePolicyAgent(policy, seed=eval_seed, scale=scale), venv, 30, False, eval_seed)
        for name, scale in (("1", 1.0), ("0", 0.0))
    }
    assert expected["0"] == evaluate(ConstantNoiseAgent(policy, 0.0), venv, 30, True, eval_seed)

    def base_policy_rows():
        with open(tmp_path / "progress.csv", newline="") as f:
            return [row for row in csv.DictReader(f) if row["base_policy/noise_x1/success_rate"]]

    (row,) = base_policy_rows()
    assert float(row["train/env_steps"]) == 0 and not row["eval/success_rate"]
    for name, result in expected.items():
        assert {key: float(row[f"base_policy/noise_x{name}/{key}"]) for key in result} == pytest.approx(result)

    run(
        steering_config(
            tmp_path,
            *quick,
            "eval.base_policy_noise_scales=[1.0,0]",
            f"resume={tmp_path}",
            "train.total_env_steps=1200",
        )
    )
    assert len(base_policy_rows()) == 1, "a resumed run does not evaluate the base policy again"
    with open(tmp_path / "progress.csv", newline="") as f:
        assert max(float(r["train/env_steps"]) for r in csv.DictReader(f)) >= 1200


@pytest.mark.parametrize(
    "algorithm, precompute, noise_action_dim, overlap, compiled_bf16",
    [
        ("dsrl_na", False, 0, False, False),
        ("dsrl_na", True, 0, False, False),
        ("dsrl_na", False, 0, True, False),
        ("dsrl_na", True, 0, True, True),
        ("dsrl_sac", False, 0, False, False),
        ("dsrl_na", False, 2, False, False),
        ("dsrl_sac", False, 2, False, False),
    ],
    ids=["na", "na_pairs", "na_overlap", "na_every_speed_option", "sac", "na_low_dim", "sac_low_dim"],
)
def test_dsrl_solves_the_steering_task(tmp_path, algorithm, precompute, noise_action_dim, overlap, compiled_bf16):
    torch.manual_seed(0)
    cfg = steering_config(
        tmp_path,
        f"algorithm={algorithm}",
        f"train.precompute_distillation={precompute}",
        f"train.noise_action_dim={noise_action_dim}",
        f"train.overlap_env_steps={overlap}",
        f"train.torch_compile={compiled_bf16}",
        f"train.autocast_bf16={compiled_bf16}",
        "train.total_env_steps=4500",
        "eval.interval_env_steps=0",
        "eval.n_episodes=100",
    )
    result = run(cfg)
    assert result["success_rate"] >= 0.9, result
    assert glob.glob(str(tmp_path / "checkpoints" / "model_*.zip"))


def test_gym_hopper_run_logs_evaluates_and_checkpoints(tmp_path, hopper_files):
    """The main command on Hopper-v5 with DPPO's hopper network, shrunk to seconds."""
    checkpoint, normalization = hopper_files
    run_dir = tmp_path / "run"
    command = [
        sys.executable,
        str(REPO_ROOT / "train_dsrl.py"),
        f"--config-path={os.path.dirname(HOPPER_CONFIG)}",
        "--config-name=dsrl_hopper.yaml",
        f"hydra.run.dir={run_dir}",
        f"base_policy.checkpoint={checkpoint}",
        f"base_policy.normalization={normalization}",
        "train.total_env_steps=400",
        "train.init_rollout_steps=20",
        "train.utd=2",
        "train.layer_size=32",
        "env.n_envs=2",
        "env.n_eval_envs=2",
        "env.max_episode_steps=60",
        "eval.n_episodes=2",
        "eval.interval_env_steps=200",
        "save_model_interval=200",
        "log_interval=1",
    ]
    env = dict(os.environ, WANDB_SILENT="true")
    out = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "final evaluation: return_mean=" in out.stdout and "success_rate" not in out.stdout
    with open(run_dir / "progress.csv") as f:
        rows = list(csv.DictReader(f))
    evals = [r for r in rows if r["eval/return_mean"]]
    assert len(evals) >= 2
    env_steps = [int(float(r["train/env_steps"])) for r in rows if r["train/env_steps"]]
    assert env_steps == sorted(env_steps) and env_steps[-1] >= 400
    assert float(rows[-1]["train/gradient_steps"]) > 0
    assert glob.glob(str(run_dir / "events.out.tfevents.*"))
    assert glob.glob(str(run_dir / "wandb" / "offline-run-*" / "*.wandb"))
    saved = sorted(glob.glob(str(run_dir / "checkpoints" / "model_*.zip")))
    assert len(saved) >= 2 and not glob.glob(str(run_dir / "checkpoints" / ".*partial*"))


def test_dead_env_worker_stops_the_run_with_a_clear_error(tmp_path, monkeypatch):
    from dsrl.callbacks import DSRLCallback

    on_step = DSRLCallback._on_step
    workers = []

    def kill_a_worker_later(self):
        if self.env_steps >= 400:
            workers[:] = self.training_env.unwrapped.processes
            workers[0].kill()
        return on_step(self)

    monkeypatch.setattr(DSRLCallback, "_on_step", kill_a_worker_later)
    cfg = steering_config(
        tmp_path,
        "env.vec_env=subproc",
        "env.n_envs=2",
        "train.utd=1",
        "save_model_interval=200",
        "train.init_rollout_steps=250",
        "eval.interval_env_steps=0",
    )
    with pytest.raises(RuntimeError, match=r"environment worker process died .* latest checkpoint: .*model_\d+.zip"):
        run(cfg)
    assert workers and not any(p.is_alive() for p in workers), "a surviving env worker was left running"
    saved = glob.glob(str(tmp_path / "checkpoints" / "model_*.zip"))
    assert len(saved) == 2 and not glob.glob(str(tmp_path / "checkpoints" / ".*"))
    from dsrl.algorithms.sac_diffusion_noise import SACDiffusionNoise
    from dsrl.base_policies import load_base_policy

    base = load_base_policy(dict(cfg.base_policy))
    restored = SACDiffusionNoise.load(max(saved, key=os.path.getmtime), base_policy=base, device="cpu")
    assert restored.num_timesteps > 0


def test_offline_data_enters_the_replay_buffer_in_the_base_policys_bounds(tmp_path):
    from dsrl.data.offline import add_to_replay_buffer, agent_observations, chunk_transitions, load_in_policy_bounds
    from dsrl.envs.steering import collect_demonstrations
    from dsrl.training import build_agent

    cfg = steering_config(tmp_path)
    normalizer = Normalizer.load(cfg.base_policy.normalization)
    data, _ = collect_demonstrations(20, seed=5)
    data.save_dppo(str(tmp_path / "same"), normalizer)
    loaded = load_in_policy_bounds(str(tmp_path / "same" / "train.npz"), normalizer)
    np.testing.assert_allclose(loaded.states, normalizer.normalize_obs(data.states), atol=1e-5)
    np.testing.assert_allclose(loaded.actions, normalizer.normalize_action(data.actions), atol=1e-5)
    refit = data.save_dppo(str(tmp_path / "refit"))
    assert not refit.matches(normalizer)
    from_refit = load_in_policy_bounds(str(tmp_path / "refit" / "train.npz"), normalizer)
    np.testing.assert_allclose(from_refit.states, loaded.states, atol=1e-5)
    np.testing.assert_allclose(from_refit.actions, loaded.actions, atol=1e-5)
    Normalizer(refit.obs_min[:1], refit.obs_max[:1], refit.action_min, refit.action_max).save(
        str(tmp_path / "refit" / "normalization.npz")
    )
    refused = r"refit/normalization.npz' has obs_min of 1 dims, but .*refit/train.npz' has obs_dim=2"
    with pytest.raises(ValueError, match=refused):
        load_in_policy_bounds(str(tmp_path / "refit" / "train.npz"), normalizer)
    dataclasses.replace(data, states=data.states[:, :1]).save_dppo(str(tmp_path / "one_dim"))
    with pytest.raises(ValueError, match="load_offline_data's bounds beside .* has obs_min of 1 dims"):
        load_in_policy_bounds(str(tmp_path / "one_dim" / "train.npz"), normalizer)

    policy = load_base_policy(dict(cfg.base_policy))
    venv = make_vec_env(dict(cfg.env), normalizer, policy.chunk, policy.cond_steps, 4)
    model = build_agent(cfg, venv, policy, torch.device("cpu"))
    transitions = chunk_transitions(loaded, agent_observations(loaded, normalizer), policy.chunk)
    added = add_to_replay_buffer(model.replay_buffer, transitions)
    assert added == len(transitions["obs"]) // 4 * 4 and model.replay_buffer.pos == added // 4
    stored = model.replay_buffer.actions[: model.replay_buffer.pos].reshape(-1, 8)
    np.testing.assert_array_equal(stored, transitions["actions"][:added])
    assert model.replay_buffer.rewards[: model.replay_buffer.pos].sum() == pytest.approx(
        transitions["rewards"][:added].sum()
    )


@pytest.mark.parametrize("tf32, precision", [(True, "tf32"), (False, "ieee")])
def test_tf32_is_set_on_cuda_only(monkeypatch, tf32, precision):
    import dsrl.training

    matmul, conv = torch.backends.cuda.matmul, torch.backends.cudnn.conv
    before = matmul.fp32_precision, conv.fp32_precision
    cfg = compose_task_config(STEERING_CONFIG, ["run_dir=unused", "device=cpu", f"tf32={tf32}"])
    try:
        matmul.fp32_precision = conv.fp32_precision = "none"
        assert dsrl.training.training_device(cfg) == torch.device("cpu")
        assert (matmul.fp32_precision, conv.fp32_precision) == ("none", "none"), "a CPU run's numerics are untouched"
        monkeypatch.setattr(dsrl.training, "get_device", lambda name: torch.device("cuda"))  # no CUDA call is made
        assert dsrl.training.training_device(cfg) == torch.device("cuda")
        assert (matmul.fp32_precision, conv.fp32_precision) == (precision, precision)
    finally:
        matmul.fp32_precision, conv.fp32_precision = before


@pytest.mark.parametrize("algorithm", ["dsrl_na", "dsrl_sac"])
@pytest.mark.parametrize("bootstrap", [True, False])
def test_time_limit_is_a_truncation_or_a_terminal_in_the_td_target(tmp_path, algorithm, bootstrap):
    from dsrl.training import build_agent

    cfg = steering_config(
        tmp_path,
        f"algorithm={algorithm}",
        f"train.bootstrap_time_limit={bootstrap}",
        "train.init_rollout_steps=250",
        "env.max_episode_steps=12",  # too short to reach the goal line: every episode ends at the time limit
    )
    policy = load_base_policy(dict(cfg.base_policy))
    normalizer = Normalizer.load(cfg.base_policy.normalization)
    venv = make_vec_env(dict(cfg.env), normalizer, policy.chunk, policy.cond_steps, 2)
    model = build_agent(cfg, venv, policy, torch.device("cpu"))
    agent_steps = cfg.env.max_episode_steps // policy.chunk
    model.learn(2 * agent_steps * 2)  # two episodes in each of 2 env slots, all base-policy steps
    rows = np.arange(model.replay_buffer.pos)
    dones = model.replay_buffer._get_samples(rows).dones.numpy().ravel()  # either slot: their episodes align
    time_limit = (rows + 1) % agent_steps == 0
    assert time_limit.sum() == 2 and not dones[~time_limit].any()
    np.testing.assert_array_equal(dones[time_limit], 0.0 if bootstrap else 1.0)


def steering_agent(tmp_path, *overrides):
    """The untrained agent ``build_agent`` makes of the steering config with ``overrides``, on 2 envs, on the CPU."""
    from dsrl.training import build_agent

    cfg = steering_config(tmp_path, *overrides)
    policy = load_base_policy(dict(cfg.base_policy))
    venv = make_vec_env(dict(cfg.env), Normalizer.load(cfg.base_policy.normalization), policy.chunk, 1, 2)
    return build_agent(cfg, venv, policy, torch.device("cpu"))


@pytest.mark.parametrize("algorithm", ["dsrl_na", "dsrl_sac"])
@pytest.mark.parametrize("zero_init", [True, False])
def test_actor_zero_init_setting_reaches_the_actor(tmp_path, algorithm, zero_init):
    model = steering_agent(tmp_path, f"algorithm={algorithm}", f"train.actor_zero_init={zero_init}")
    mean_noise = model.actor(torch.rand(16, 2) * 2 - 1, deterministic=True).detach()
    assert (mean_noise.abs().max() == 0) == zero_init


@pytest.mark.parametrize("kl", [True, False])
def test_kl_to_base_noise_setting_reaches_dsrl_na(tmp_path, kl):
    assert steering_agent(tmp_path, f"train.kl_to_base_noise={kl}").kl_to_base_noise is kl


def test_kl_prior_noise_scale_setting_reaches_dsrl_na(tmp_path):
    model = steering_agent(tmp_path, "train.kl_to_base_noise=true", "train.kl_prior_noise_scale=0.5")
    assert model.kl_to_base_noise and model.kl_prior_noise_scale == 0.5
