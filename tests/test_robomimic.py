"""Robomimic tasks: observation layout, success and reward, config errors, a short DSRL run on lift."""

import csv
import glob
import json
import math
import os
from types import SimpleNamespace

import mujoco
import numpy as np
import pytest
import torch
from conftest import SMALL_POLICY, policy_files, run_script
from scipy.spatial.transform import Rotation

from dsrl.base_policies import Normalizer, build_base_policy, load_base_policy
from dsrl.base_policies.checkpoint import save_checkpoint
from dsrl.config import compose_task_config, repo_path
from dsrl.data.robomimic_experts import CanExpert, LiftExpert, SquareExpert, run_expert_episode
from dsrl.data.robomimic_hdf5 import read_env_meta, read_low_dim, write_demos
from dsrl.envs.factory import check_env_config, make_env
from dsrl.envs.robomimic import LOW_DIM_KEYS, RobomimicLowDimEnv, env_meta_path, load_env_meta, make_robomimic_env
from dsrl.training import run

IDENTITY = Normalizer(
    np.full(19, -1, np.float32), np.full(19, 1, np.float32), -np.ones(7, np.float32), np.ones(7, np.float32)
)


@pytest.mark.parametrize("task, dims", [("lift", 19), ("can", 23), ("square", 23), ("transport", 59)])
def test_low_dim_observation_has_the_listed_keys_in_order(task, dims):
    env = make_robomimic_env(task, 10)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (dims,) and env.observation_space.shape == (dims,)
    expected = np.concatenate([np.ravel(env.raw_obs[k]) for k in LOW_DIM_KEYS[task]])
    np.testing.assert_allclose(obs, expected, rtol=1e-6)
    assert env.action_space.shape == ((14,) if task == "transport" else (7,))
    again, _ = env.reset(seed=0)
    other, _ = env.reset(seed=1)
    np.testing.assert_allclose(obs, again)
    assert not np.allclose(obs, other), "another seed must place the objects elsewhere"


def test_resets_draw_scenes_from_the_envs_own_generator_not_numpys_global_one():
    """Envs in one process (env.vec_env=dummy) neither reseed the learner's generator nor draw from each other's."""
    alone = make_robomimic_env("lift", 10)  # lift draws its cube's size as well as its placement
    scenes = [alone.reset(seed=0)[0], alone.reset()[0], alone.reset()[0]]
    env, other = make_robomimic_env("lift", 10), make_robomimic_env("lift", 10)
    np.random.seed(123)
    learner_draws = np.random.random(3)
    np.random.seed(123)
    shared = [env.reset(seed=0)[0], other.reset(seed=5)[0], np.random.random(), env.reset()[0], other.reset()[0]]
    shared += [np.random.random(), env.reset()[0], np.random.random()]
    np.testing.assert_array_equal(np.stack([shared[0], shared[3], shared[6]]), np.stack(scenes))
    np.testing.assert_array_equal([shared[2], shared[5], shared[7]], learner_draws)


@pytest.mark.parametrize("task, arms", [("can", 1), ("transport", 2)])
def test_split_step_computes_each_substeps_dynamics_once_and_trajectories_stay_bitwise_the_same(
    task, arms, monkeypatch
):
    """robosuite's step: forward dynamics per substep, again per arm, again in mj_step; ours: mj_step1 + mj_step2."""
    calls = []
    for name in ("mj_forward", "mj_step", "mj_step1", "mj_step2"):
        counted = getattr(mujoco, name)
        monkeypatch.setattr(mujoco, name, lambda m, d, name=name, f=counted: calls.append(name) or f(m, d))
    actions = np.random.default_rng(0).uniform(-1, 1, (2, 15, 7 * arms))
    runs = {}
    for split in (False, True):
        env = RobomimicLowDimEnv(load_env_meta(env_meta_path(task)), LOW_DIM_KEYS[task], split_dynamics=split)
        substeps = round(env.env.env.control_timestep / env.env.env.model_timestep)
        observations, counts = [], []
        for seed, episode in enumerate(actions):
            observations.append(env.reset(seed=seed)[0])
            calls.clear()
            observations += [env.step(action)[0] for action in episode]
            counts.append({name: calls.count(name) for name in set(calls)})
        data = env.env.env.sim.data
        runs[split] = observations + [env.env.get_state()["states"], data.sensordata, data.qacc], counts
    np.testing.assert_array_equal(np.concatenate(runs[True][0]), np.concatenate(runs[False][0]))
    assert runs[True][1] == [{"mj_step1": 15 * substeps, "mj_step2": 15 * substeps}] * 2
    own = {"mj_forward": 15 * substeps * (1 + arms) - arms, "mj_step": 15 * substeps}
    assert runs[False][1] == [own] * 2, "each arm's controller forwards again but in an episode's first substep"


@pytest.mark.parametrize("task", ["can", "square"])
def test_fast_reset_keeps_the_model_and_episodes_stay_bitwise_the_same(task):
    """robosuite rebuilds the model at each reset (hard_reset); these tasks' rebuilds are all the same."""
    actions = np.random.default_rng(0).uniform(-1, 1, (3, 10, 7))
    runs = {}
    for fast in (False, True):
        env = RobomimicLowDimEnv(load_env_meta(env_meta_path(task)), LOW_DIM_KEYS[task], fast_reset=fast)
        model = env.env.env.sim.model
        states = []
        for seed, episode in enumerate(actions):
            states += [env.reset(seed=seed)[0], env.env.get_state()["states"]]
            for action in episode:
                states += [env.step(action)[0], env.env.get_state()["states"]]
        assert (env.env.env.sim.model is model) == fast, "a fast reset keeps the model, robosuite's rebuilds it"
        runs[fast] = np.concatenate(states)
    np.testing.assert_array_equal(runs[True], runs[False])


@pytest.mark.parametrize("task", ["lift", "transport"])
def test_tasks_that_draw_random_numbers_while_building_their_model_rebuild_it_at_every_reset(task):
    """Lift's cube size (and Transport's draws) come with the model: keeping it would change the episodes."""
    env = RobomimicLowDimEnv(load_env_meta(env_meta_path(task)), LOW_DIM_KEYS[task])
    assert env.env.env.hard_reset
    np.random.seed(0)
    first_draw = np.random.random()
    np.random.seed(0)
    env.env.env._load_model()
    assert np.random.random() != first_draw


def test_scripted_lift_success_is_detected_with_offset_reward():
    cfg = dict(suite="robomimic", name="lift", max_episode_steps=300, reward_offset=1.0, kwargs={})
    env = make_env(cfg, IDENTITY, chunk=1, cond_steps=1)
    env.reset(seed=3)
    expert = LiftExpert(env.unwrapped, np.random.default_rng(0), noise=0.0)
    expert.reset()
    rewards = []
    for _ in range(300):
        _, reward, terminated, truncated, info = env.step(expert.act())
        rewards.append(reward)
        if terminated or truncated:
            break
    assert terminated and info["is_success"]
    assert rewards[-1] == 0.0 and set(rewards[:-1]) == {-1.0}, "sparse success reward minus 1 per step"


def test_without_terminate_on_success_the_episode_runs_on_and_remembers_its_success():
    cfg = dict(
        suite="robomimic", name="lift", max_episode_steps=300, reward_offset=1.0, kwargs={"terminate_on_success": False}
    )
    env = make_env(cfg, IDENTITY, chunk=1, cond_steps=1)
    env.reset(seed=3)
    expert = LiftExpert(env.unwrapped, np.random.default_rng(0), noise=0.0)
    expert.reset()
    for _ in range(300):
        _, reward, terminated, _, info = env.step(expert.act())
        assert not terminated
        if info["is_success"]:
            break
    assert info["is_success"] and reward == 0.0, "a step in the success state earns 1 - 1"
    open_gripper = np.array([0, 0, 0, 0, 0, 0, -1.0])
    for _ in range(30):
        _, reward, terminated, truncated, info = env.step(open_gripper)
    assert reward == -1.0, "the dropped cube is no longer lifted"
    assert info["is_success"] and not terminated and not truncated, "the episode goes on and keeps its success"
    env.reset(seed=3)
    _, _, _, _, info = env.step(open_gripper)
    assert not info["is_success"], "a reset forgets it"


def test_scripted_can_demo_succeeds_and_round_trips_through_hdf5(tmp_path):
    env = make_robomimic_env("can", 300)
    demo, success = run_expert_episode(CanExpert(env, np.random.default_rng(0), noise=0.0), seed=0, max_steps=300)
    assert success and demo["dones"][-1] == 1.0 and demo["rewards"][-1] == 1.0 and demo["dones"][:-1].sum() == 0
    assert len(demo["obs"]) == len(demo["actions"]) == len(demo["states"]) < 300
    path = str(tmp_path / "can.hdf5")
    write_demos(path, load_env_meta(env_meta_path("can")), [demo])
    assert read_env_meta(path)["env_name"] == "PickPlaceCan"
    data = read_low_dim(path, LOW_DIM_KEYS["can"])
    assert data.states.shape == (len(demo["actions"]), 23)
    first_obs, _ = env.reset(seed=0)
    np.testing.assert_allclose(data.states[0], first_obs, rtol=1e-6)
    np.testing.assert_allclose(data.actions, demo["actions"], rtol=1e-6)


def test_scripted_square_expert_puts_the_nut_on_the_peg_square_to_it_reproducibly():
    env = make_robomimic_env("square", 400)
    demo, success = run_expert_episode(SquareExpert(env, np.random.default_rng(0), noise=0.1), seed=2, max_steps=400)
    assert success and len(demo["actions"]) < 200
    robosuite_env = env.env.env
    peg = robosuite_env.sim.data.body_xpos[robosuite_env.peg1_body_id]
    nut = env.raw_obs["object"]
    assert np.abs(nut[:2] - peg[:2]).max() < 0.01 and nut[2] < robosuite_env.table_offset[2] + 0.05
    nut_yaw = Rotation.from_quat(nut[3:7]).as_euler("xyz")[2]
    assert abs((nut_yaw + np.pi / 4) % (np.pi / 2) - np.pi / 4) < 0.1, "the nut's sides line up with the peg's"
    again, _ = run_expert_episode(SquareExpert(env, np.random.default_rng(0), noise=0.1), seed=2, max_steps=400)
    np.testing.assert_array_equal(again["actions"], demo["actions"], "the same seeds give the same demonstration")


def test_transport_policy_is_made_from_a_users_robomimic_file(tmp_path):
    """No expert makes transport demos: a user's file converts and trains into a policy its task config loads."""
    rng = np.random.default_rng(0)
    random_arms = SimpleNamespace(
        env=make_robomimic_env("transport", 800), reset=lambda: None, act=lambda: rng.uniform(-1, 1, 14)
    )
    demo, _ = run_expert_episode(random_arms, seed=0, max_steps=12)
    write_demos(str(tmp_path / "low_dim.hdf5"), load_env_meta(env_meta_path("transport")), [demo])
    data, policy_dir = tmp_path / "transport", tmp_path / "policy"
    made = run_script(
        *["scripts/make_dataset.py", "convert", "--hdf5", str(tmp_path / "low_dim.hdf5")],
        *["--task", "transport", "--out", str(data)],
    )
    assert made.returncode == 0 and "1 demos, 12 steps, obs_dim 59, action_dim 14" in made.stdout, made.stderr
    pretrained = run_script(
        *["scripts/pretrain.py", "--config-path=cfg/pretrain", "--config-name=robomimic_transport.yaml"],
        *[f"dataset={data}", f"output_dir={policy_dir}", "eval.n_episodes=0"],
        *["train.steps=2", "train.save_every=2", "train.batch_size=4"],
    )
    assert pretrained.returncode == 0, pretrained.stderr
    cfg = compose_task_config(repo_path("cfg/robomimic/dsrl_transport.yaml"), policy_files(policy_dir)).base_policy
    policy, normalizer = load_base_policy(cfg), Normalizer.load(cfg.normalization)
    states = read_low_dim(str(tmp_path / "low_dim.hdf5"), LOW_DIM_KEYS["transport"]).states
    actions = policy(torch.as_tensor(normalizer.normalize_obs(states[:1])), torch.zeros(1, 8, 14))
    assert actions.shape == (1, 8, 14) and torch.isfinite(actions).all()


def test_robomimic_config_errors_come_before_any_env(tmp_path):
    base = dict(suite="robomimic", name="can", max_episode_steps=300, n_envs=2, n_eval_envs=2, vec_env="subproc")
    check_env_config(dict(base, kwargs={}))
    with pytest.raises(ValueError, match="env.name='stack' is not a Robomimic task"):
        check_env_config(dict(base, name="stack", kwargs={}))
    with pytest.raises(ValueError, match="obs_keys has 'robot0_eef_velocity'"):
        check_env_config(dict(base, kwargs={"obs_keys": ["robot0_eef_pos", "robot0_eef_velocity"]}))
    (tmp_path / "broken.json").write_text('{"env_name": "PickPlaceCan", ')
    with pytest.raises(ValueError, match="broken.json' is not valid JSON"):
        check_env_config(dict(base, kwargs={"env_meta": str(tmp_path / "broken.json")}))


def test_shipped_env_meta_matches_dppo_settings():
    for task in ("lift", "can", "square", "transport"):
        with open(repo_path(f"cfg/robomimic/env_meta/{task}.json")) as f:
            meta = json.load(f)
        controller = meta["env_kwargs"]["controller_configs"]
        assert meta["env_version"] == "1.4.1" and meta["env_kwargs"]["control_freq"] == 20
        assert controller["type"] == "OSC_POSE" and controller["control_delta"] and controller["kp"] == 150
        assert controller["output_max"] == [0.05, 0.05, 0.05, 0.5, 0.5, 0.5]


def test_short_dsrl_run_on_lift(tmp_path):
    torch.manual_seed(0)
    policy_cfg = dict(SMALL_POLICY, obs_dim=19, action_dim=7, activation_type="Mish", denoising_steps=20, ddim_steps=4)
    policy = build_base_policy(policy_cfg)
    save_checkpoint(str(tmp_path / "state.pt"), policy, policy, epoch=0)
    IDENTITY.save(str(tmp_path / "normalization.npz"))
    cfg = compose_task_config(
        repo_path("cfg/robomimic/dsrl_lift.yaml"),
        [
            f"run_dir={tmp_path / 'run'}",
            "wandb.mode=disabled",
            *policy_files(tmp_path),
            "base_policy.mlp_dims=[32,32,32]",
            "base_policy.ddim_steps=4",
            "train.layer_size=32",
            "train.utd=1",
            "train.noise_critic_grad_steps=1",
            "train.init_rollout_steps=8",
            "train.total_env_steps=160",
            "env.n_envs=2",
            "env.n_eval_envs=2",
            "env.vec_env=dummy",
            "env.max_episode_steps=40",
            "eval.n_episodes=2",
            "eval.interval_env_steps=80",
        ],
    )
    result = run(cfg)
    assert result["success_rate"] == 0.0 and result["return_mean"] == pytest.approx(-40.0)
    with open(tmp_path / "run" / "progress.csv") as f:
        rows = list(csv.DictReader(f))
    assert sum(1 for r in rows if r["eval/success_rate"]) == 2
    assert glob.glob(str(tmp_path / "run" / "checkpoints" / "model_*.zip"))


RECIPE_RUNS = {
    "kl_lift": "docs/results/lift/kl_to_base_noise/seed0",
    "kl_can": "docs/results/can/kl_prior_noise_x0.5_kl_1_nat/seed0",
}


@pytest.mark.parametrize("recipe, run_dir", RECIPE_RUNS.items())
def test_a_recipe_sets_the_flags_of_its_documented_runs_and_nothing_else(recipe, run_dir):
    from omegaconf import OmegaConf

    from dsrl.config import check_run_config

    assert sorted(os.listdir(repo_path("dsrl/conf/recipe"))) == sorted(f"{name}.yaml" for name in RECIPE_RUNS)
    task = repo_path(f"cfg/robomimic/dsrl_{recipe.split('_')[1]}.yaml")
    plain = compose_task_config(task, ["run_dir=unused"])
    cfg = compose_task_config(task, ["run_dir=unused", f"+recipe={recipe}"])
    check_run_config(cfg)
    changed = {key for key in plain.train if plain.train[key] != cfg.train[key]}
    assert OmegaConf.masked_copy(plain, ["env", "base_policy", "eval", "algorithm"]) == OmegaConf.masked_copy(
        cfg, ["env", "base_policy", "eval", "algorithm"]
    )
    documented_run = OmegaConf.load(repo_path(f"{run_dir}/config.yaml"))
    documented = documented_run.train
    documented.setdefault("kl_prior_noise_scale", 1.0)  # runs from before the key had the base policy's own noise
    # The runs predate 79d37ba, when init_rollout_steps counted transitions, not vector steps of all envs.
    documented.init_rollout_steps = math.ceil(documented.init_rollout_steps / documented_run.env.n_envs)
    assert changed and {key: cfg.train[key] for key in changed} == {key: documented[key] for key in changed}


def test_seed_config_takes_the_documented_overrides():
    from dsrl.config import check_run_config

    path = repo_path("cfg/robomimic/dsrl_can.yaml")
    defaults = compose_task_config(path, ["run_dir=unused"])
    assert (defaults.algorithm, defaults.train.utd, defaults.train.layer_size) == ("dsrl_na", 20, 2048)
    assert (defaults.env.n_envs, defaults.env.n_eval_envs, defaults.eval.n_episodes) == (4, 25, 200)
    assert (defaults.base_policy.ddim_steps, defaults.train.init_rollout_steps, defaults.device) == (8, 1501, "auto")
    assert defaults.wandb.mode == "offline"
    cfg = compose_task_config(
        path,
        [
            "run_dir=unused",
            "algorithm=dsrl_sac",
            "train.action_magnitude=1.0",
            "train.utd=10",
            "env.n_envs=8",
            "seed=3",
        ],
    )
    assert (cfg.algorithm, cfg.train.action_magnitude, cfg.train.utd, cfg.env.n_envs, cfg.seed) == (
        "dsrl_sac",
        1.0,
        10,
        8,
        3,
    )
    check_run_config(cfg)
