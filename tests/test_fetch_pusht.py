"""Fetch and PushT: flat observations, scripted experts, shipped base policies and short DSRL runs."""

import glob
import json

import gymnasium as gym
import numpy as np
import pytest
from stable_baselines3.common.save_util import load_from_zip_file

from dsrl.base_policies.normalization import Normalizer
from dsrl.config import compose_task_config, repo_path
from dsrl.data.fetch_experts import FETCH_EXPERTS
from dsrl.data.pusht_expert import PushTExpert
from dsrl.data.trajectories import collect_successes, concatenate, record_episode, split_images
from dsrl.envs.factory import check_env_config, check_observations, make_env
from dsrl.envs.fetch import make_fetch_env
from dsrl.envs.pusht import IMAGE_SHAPE, PIXELS, PUSHT_ID, FlatPixelsAgentPos, make_pusht_env, pusht_state
from dsrl.envs.wrappers import ActionChunkWrapper
from dsrl.training import run

PICK_AND_PLACE = repo_path("cfg/fetch/dsrl_pick_and_place.yaml")


def test_fetch_observation_is_flat_in_the_documented_order():
    env = make_fetch_env("FetchPickAndPlace-v4", 50)
    obs, info = env.reset(seed=3)
    raw = env.unwrapped._get_obs()
    assert obs.shape == (31,) and obs.dtype == np.float32 and info["is_success"] is False
    np.testing.assert_allclose(obs[:25], raw["observation"], rtol=1e-6)
    np.testing.assert_allclose(obs[25:28], raw["achieved_goal"], rtol=1e-6)
    np.testing.assert_allclose(obs[28:], raw["desired_goal"], rtol=1e-6)
    with pytest.raises(ValueError, match="env.kwargs.reward_type='shaped'"):
        check_env_config(
            dict(suite="fetch", name="FetchPush-v4", kwargs={"reward_type": "shaped"}, max_episode_steps=50)
        )
    with pytest.raises(ValueError, match="env.name='FetchPush-v1' is not a Fetch task"):
        check_env_config(dict(suite="fetch", name="FetchPush-v1", max_episode_steps=50))


def test_scripted_pick_and_place_expert_succeeds():
    env = make_fetch_env("FetchPickAndPlace-v4", 50)
    rng = np.random.default_rng(0)
    expert = FETCH_EXPERTS["FetchPickAndPlace-v4"](rng, noise=0.1)
    data, attempts = collect_successes(env, expert, 10, seed=0, max_steps=50, reset=expert.reset, rng=rng)
    assert attempts <= 11, f"{attempts} attempts for 10 successes"
    assert data.n_trajectories == 10 and data.states.shape[1] == 31 and data.actions.shape[1] == 4
    assert np.abs(data.actions).max() <= 1.0 and (data.traj_lengths < 50).all(), "episodes end at success"


def pick_and_place_demos(n_demos, work_dir=None, settings=None, stop_at_step=None):
    """Scripted FetchPickAndPlace demos as a fresh process makes them; Ctrl-C at act call ``stop_at_step``."""
    env = make_fetch_env("FetchPickAndPlace-v4", 50)
    rng = np.random.default_rng(0)
    expert = FETCH_EXPERTS["FetchPickAndPlace-v4"](rng, noise=0.3)
    calls = []

    def act(obs):
        calls.append(1)
        if len(calls) == stop_at_step:
            raise KeyboardInterrupt
        return expert(obs)

    return collect_successes(env, act, n_demos, 0, 50, expert.reset, rng, work_dir=work_dir, settings=settings)


def test_a_stopped_demo_collection_continues_to_the_demos_of_an_unstopped_one(tmp_path):
    straight, straight_attempts = pick_and_place_demos(6)
    work_dir = str(tmp_path / "partial")
    with pytest.raises(KeyboardInterrupt):
        pick_and_place_demos(6, work_dir, {"noise": 0.3}, stop_at_step=100)  # within the third episode
    with open(tmp_path / "partial" / "progress.json") as f:
        progress = json.load(f)
    assert progress["attempts"] == 2 and 0 < progress["successes"] <= 2
    assert len(glob.glob(f"{work_dir}/episode_*.pkl.gz")) == progress["successes"]
    with pytest.raises(ValueError, match=r"holds a collection made with noise=0.3, not 0.5: use the same settings"):
        pick_and_place_demos(6, work_dir, {"noise": 0.5})
    resumed, resumed_attempts = pick_and_place_demos(6, work_dir, {"noise": 0.3})
    assert resumed_attempts == straight_attempts
    for key in ("states", "actions", "rewards", "terminals", "traj_lengths"):
        np.testing.assert_array_equal(getattr(resumed, key), getattr(straight, key), err_msg=key)


def short_run_config(config_file: str, tmp_path, total_env_steps: int, init_rollout_steps: int):
    """The shipped config, run briefly on small networks in the test process."""
    return compose_task_config(
        config_file,
        [
            f"run_dir={tmp_path}",
            "wandb.mode=disabled",
            "env.vec_env=dummy",
            "env.n_envs=2",
            "env.n_eval_envs=2",
            f"train.total_env_steps={total_env_steps}",
            f"train.init_rollout_steps={init_rollout_steps}",
            "train.layer_size=64",
            "train.utd=1",
            "train.batch_size=32",
            "train.noise_critic_grad_steps=1",
            "eval.interval_env_steps=0",
            "eval.n_episodes=2",
            "video.every_evals=0",
        ],
    )


def test_short_dsrl_run_on_fetch_pick_and_place(tmp_path):
    cfg = short_run_config(PICK_AND_PLACE, tmp_path, 600, 20)
    result = run(cfg)
    assert set(result) >= {"success_rate", "return_mean"} and 0.0 <= result["success_rate"] <= 1.0
    assert -50.0 <= result["return_mean"] <= 0.0, "sparse reward: -1 per step, at most 50 steps"
    assert glob.glob(str(tmp_path / "checkpoints" / "model_*.zip"))


def test_scripted_pusht_expert_covers_the_goal():
    env = make_pusht_env(PUSHT_ID, 300, success_threshold=0.9)
    rng = np.random.default_rng(0)
    expert = PushTExpert(rng)
    data, attempts = collect_successes(
        env, lambda obs: expert(pusht_state(env)), 3, seed=0, max_steps=300, reset=expert.reset, rng=rng
    )
    assert attempts <= 8, f"{attempts} attempts for 3 episodes reaching 90% goal coverage"
    assert data.states.shape[1] == 5 and data.actions.shape[1] == 2
    assert (data.actions >= 0).all() and (data.actions <= 512).all(), "targets stay in the arena"


def test_scripted_pusht_expert_acts_on_the_current_state_alone():
    """The expert remembers nothing between steps, so a policy seeing one observation can clone it."""
    env = make_pusht_env(PUSHT_ID, 300)
    env.reset(seed=3)
    walked = PushTExpert(np.random.default_rng(0), noise=0.0, vary_style=False)
    for _ in range(30):
        env.step(walked(pusht_state(env)))
    fresh = PushTExpert(np.random.default_rng(1), noise=0.0, vary_style=False)
    state = pusht_state(env)
    np.testing.assert_array_equal(walked(state), fresh(state))


def test_scripted_pusht_expert_rarely_reverses_its_noise_free_target():
    """Acting with 10 px noise, consecutive recorded targets seldom point back the way the agent came.

    An expert whose push/go-around choice flips on the agent's noisy position pecks at the block (the
    earlier one reversed 17% of its steps), which a cloned policy cannot reproduce.
    """
    env = make_pusht_env(PUSHT_ID, 300, success_threshold=0.9)
    rng = np.random.default_rng(0)
    expert = PushTExpert(rng, noise=10.0, candidates=1, vary_style=False)
    data, _ = collect_successes(
        env,
        lambda obs: expert(pusht_state(env)),
        3,
        seed=0,
        max_steps=300,
        reset=expert.reset,
        rng=rng,
        label=lambda: expert.clean_target,
    )
    moves = data.actions - data.states[:, :2]
    ends = np.cumsum(data.traj_lengths)[:-1]
    previous, current = np.delete(moves[:-1], ends - 1, axis=0), np.delete(moves[1:], ends - 1, axis=0)
    length_products = np.linalg.norm(previous, axis=1) * np.linalg.norm(current, axis=1)  # px^2
    moving = length_products > 25.0  # e.g. both moves longer than 5 px
    reversals = np.mean((previous * current).sum(axis=1)[moving] < 0)
    assert moving.sum() > 200 and reversals < 0.08, f"{reversals:.3f} of {moving.sum()} moves reverse"


def test_pusht_keypoints_are_the_t_corners_then_agent_position():
    env = make_pusht_env(PUSHT_ID, 300, obs_type="environment_state_agent_pos")
    env.reset(seed=1)
    obs, *_ = env.step(np.array([300.0, 300.0]))
    agent_x, agent_y, block_x, block_y, angle = pusht_state(env)
    corners = np.array([(-60, 0), (60, 0), (60, 30), (-60, 30), (-15, 30), (15, 30), (15, 120), (-15, 120)], float)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    assert obs.shape == (18,) and obs.dtype == np.float32
    np.testing.assert_allclose(obs[:16].reshape(8, 2), corners @ rotation.T + [block_x, block_y], atol=1e-3)
    np.testing.assert_allclose(obs[16:], [agent_x, agent_y], atol=1e-3)


def test_pusht_pixels_are_channels_first_then_agent_position():
    env = make_pusht_env(PUSHT_ID, 300, obs_type="pixels_agent_pos")
    obs, _ = env.reset(seed=1)
    assert obs.shape == (PIXELS + 2,) and 0 <= obs[:PIXELS].min() and obs[:PIXELS].max() <= 255
    image = env.unwrapped._render()  # (96, 96, 3) uint8, what gym-pusht observes
    np.testing.assert_array_equal(obs[:PIXELS].reshape(3, 96, 96), np.moveaxis(image, -1, 0))
    np.testing.assert_allclose(obs[PIXELS:], pusht_state(env)[:2])


def test_pixel_pusht_chunks_draw_only_their_last_observation_and_match_gym_pusht():
    """A chunk of 8 steps draws one image, not 8; observations, rewards and episode ends equal gym-pusht's own env,
    also when success ends the episode on a step whose observation was to be skipped, and at truncation."""

    def chunked(env: gym.Env) -> ActionChunkWrapper:
        env.unwrapped.success_threshold = 0.9
        draws = env.unwrapped._render
        env.unwrapped.draws = 0

        def counted_render(*args, **kwargs):
            env.unwrapped.draws += 1
            return draws(*args, **kwargs)

        env.unwrapped._render = counted_render
        return ActionChunkWrapper(env, chunk=8, max_episode_steps=20)

    on_demand = chunked(make_pusht_env(PUSHT_ID, 20, obs_type="pixels_agent_pos"))
    reference = chunked(FlatPixelsAgentPos(gym.make(PUSHT_ID, obs_type="pixels_agent_pos", max_episode_steps=20)))
    for block_at_goal in (False, True):
        # at the goal, the agent holds still far from the block: success on the first step of the first chunk
        chunks = np.full((3, 16), 100.0) if block_at_goal else np.random.default_rng(0).uniform(100.0, 400.0, (3, 16))
        results = []
        for env in (on_demand, reference):
            env.unwrapped.draws = 0
            outcomes = [env.reset(seed=3)[0]]
            if block_at_goal:
                sim = env.unwrapped
                sim.agent.position = [100.0, 100.0]
                sim.block.angle = sim.goal_pose[2]  # the angle first: it turns the block about its centre of mass
                sim.block.position = list(sim.goal_pose[:2])
            for chunk in chunks:
                obs, reward, terminated, truncated, info = env.step(chunk)
                outcomes += [obs, reward, terminated, truncated, info["sim_steps"]]
                if terminated or truncated:
                    break
            results.append(outcomes)
        for mine, theirs in zip(*results, strict=True):
            np.testing.assert_array_equal(mine, theirs)
        assert results[0][-3:-1] == ([True, False] if block_at_goal else [False, True])
        chunks_run = (len(results[0]) - 1) // 5
        assert (on_demand.unwrapped.draws, reference.unwrapped.draws) == (1 + chunks_run, 1 + sum(results[0][5::5]))


@pytest.mark.parametrize(
    "config, reward_type",
    [("dsrl_pusht.yaml", "dense"), ("dsrl_pusht_pixels.yaml", "dense"), ("dsrl_pusht.yaml", "sparse")],
)
def test_pusht_steps_short_of_success_cost_and_success_costs_nothing(config, reward_type):
    """With gym-pusht's own reward (clipped coverage in [0, 1]) and its episode ending at success, staying just
    below the threshold collects more than crossing it; the shipped configs subtract 1, so every step short of
    success costs (the sparse reward: all of 1) and the episode's end at success stops the cost."""
    cfg = compose_task_config(repo_path(f"cfg/pusht/{config}"), [f"env.kwargs.reward_type={reward_type}"])
    normalizer = Normalizer.load(cfg.base_policy.normalization)
    env = make_env(cfg.env, normalizer, chunk=1, cond_steps=1)
    hold = normalizer.normalize_action(np.array([100.0, 100.0]))  # the agent stays far from the block

    def step_with_block_off_goal_by(dx: float):
        env.reset(seed=0)
        sim = env.unwrapped
        sim.agent.position = [100.0, 100.0]
        sim.block.angle = sim.goal_pose[2]  # the angle first: it turns the block about its centre of mass
        sim.block.position = [sim.goal_pose[0] + dx, sim.goal_pose[1]]
        return env.step(hold)

    _, reward, terminated, _, info = step_with_block_off_goal_by(5.0)
    threshold = cfg.env.kwargs.success_threshold
    assert not terminated and 0.5 < info["coverage"] < threshold
    short_of_success = info["coverage"] / threshold - 1.0 if reward_type == "dense" else -1.0
    assert reward == pytest.approx(short_of_success, abs=1e-6) and -1.0 <= reward < 0.0
    _, reward, terminated, _, info = step_with_block_off_goal_by(0.0)
    assert terminated and info["is_success"] and reward == 0.0


def test_policy_and_env_observations_must_match_before_training():
    image_policy = dict(obs_dim=PIXELS + 2, image_shape=[3, 96, 96])
    state_env = dict(suite="pusht", name=PUSHT_ID, kwargs={"obs_type": "state"}, max_episode_steps=300)
    with pytest.raises(ValueError, match=r"an image policy \(base_policy.image_shape=\[3, 96, 96\]\) given state obs"):
        check_observations(state_env, image_policy)
    pixel_env = dict(state_env, kwargs={"obs_type": "pixels_agent_pos"})
    with pytest.raises(ValueError, match=r"observes 27650 numbers per step, but base_policy.obs_dim=5 \(a state pol"):
        check_observations(pixel_env, dict(obs_dim=5))
    check_observations(pixel_env, image_policy)
    check_observations(state_env, dict(obs_dim=5))
    with pytest.raises(ValueError, match="env.kwargs.reward_type='shaped' is not one of \\('dense', 'sparse'\\)"):
        check_env_config(dict(state_env, kwargs={"reward_type": "shaped"}))


def test_short_dsrl_run_on_pusht_pixels_observes_the_policy_embedding(tmp_path, caplog):
    cfg = short_run_config(repo_path("cfg/pusht/dsrl_pusht_pixels.yaml"), tmp_path, 480, 5)
    env = make_pusht_env(PUSHT_ID, 12, obs_type="pixels_agent_pos")
    steps, _, _ = record_episode(env, lambda obs: np.array([300.0, 300.0]), seed=0, max_steps=12)
    offline = concatenate([split_images(steps, IMAGE_SHAPE)])
    offline.save_dppo(str(tmp_path / "offline"), Normalizer.load(cfg.base_policy.normalization))
    cfg.train.load_offline_data = str(tmp_path / "offline" / "train.npz")  # an image dataset, encoded once
    with caplog.at_level("INFO", logger="dsrl.training"):
        result = run(cfg)
    assert "added 12 offline transitions" in caplog.text
    assert 0.0 <= result["success_rate"] <= 1.0
    assert -300.0 <= result["return_mean"] <= 0.0, "reward: clipped goal coverage - 1 per step, 300 steps"
    data, _, _ = load_from_zip_file(glob.glob(str(tmp_path / "checkpoints" / "model_*.zip"))[0])
    assert data["observation_space"].shape == (64 + 2,), "the agent observes image features + agent position"
