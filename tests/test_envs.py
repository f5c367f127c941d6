"""Env wrappers: chunk execution, truncation, history, normalisation, the noise-action VecEnv."""

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces
from stable_baselines3.common.vec_env import DummyVecEnv

from dsrl.base_policies import Normalizer
from dsrl.data.trajectories import chunk_pairs
from dsrl.envs.diffusion_env import DiffusionPolicyEnvWrapper
from dsrl.envs.factory import check_env_config, env_seeds, make_vec_env
from dsrl.envs.noise_space import NoiseBox, NoiseExpansion
from dsrl.envs.prefetch import PrefetchVecEnv
from dsrl.envs.steering import SteeringEnv, collect_demonstrations
from dsrl.envs.wrappers import ActionChunkWrapper, NormalizeWrapper


class CounterEnv(gym.Env):
    """Observation = step count; reward = the action's first entry; terminates at step ``end``."""

    def __init__(self, end=100, success_at=None):
        self.observation_space = spaces.Box(-np.inf, np.inf, (1,), np.float32)
        self.action_space = spaces.Box(-1, 1, (2,), np.float32)
        self.end, self.success_at, self.t = end, success_at, 0

    def reset(self, *, seed=None, options=None):
        self.t = 0
        return np.zeros(1, np.float32), {}

    def step(self, action):
        self.t += 1
        info = {"is_success": self.t == self.success_at}
        return np.array([self.t], np.float32), float(action[0]), self.t >= self.end, False, info


def test_chunk_sums_rewards_and_counts_sim_steps():
    env = ActionChunkWrapper(CounterEnv(), chunk=3, max_episode_steps=50)
    assert env.action_space.shape == (6,)
    env.reset()
    obs, reward, terminated, truncated, info = env.step(np.array([0.5, 0, 0.25, 0, 1.0, 0]))
    assert obs.tolist() == [3.0] and reward == pytest.approx(1.75)
    assert info["sim_steps"] == 3 and not terminated and not truncated


def test_chunk_stops_at_first_termination_and_keeps_success():
    env = ActionChunkWrapper(CounterEnv(end=7, success_at=6), chunk=4, max_episode_steps=50)
    env.reset()
    env.step(np.ones(8))
    obs, reward, terminated, _, info = env.step(np.ones(8))
    assert terminated and info["sim_steps"] == 3 and obs.tolist() == [7.0] and reward == 3.0
    assert info["is_success"], "success reported inside the chunk must survive to the chunk's info"


def test_truncates_at_max_episode_steps_in_simulator_steps():
    env = ActionChunkWrapper(CounterEnv(), chunk=4, max_episode_steps=10)
    env.reset()
    results = [env.step(np.zeros(8)) for _ in range(3)]
    assert [r[3] for r in results] == [False, False, True]
    assert results[-1][4]["sim_steps"] == 2 and results[-1][0].tolist() == [10.0]


def test_observation_history_oldest_first():
    env = ActionChunkWrapper(CounterEnv(), chunk=2, max_episode_steps=50, cond_steps=3)
    obs, _ = env.reset()
    assert obs.tolist() == [0.0, 0.0, 0.0]
    obs, *_ = env.step(np.zeros(4))
    assert obs.tolist() == [0.0, 1.0, 2.0]
    obs, *_ = env.step(np.zeros(4))
    assert obs.tolist() == [2.0, 3.0, 4.0]


def test_normalize_wrapper_maps_both_ways_and_checks_dims():
    norm = Normalizer(
        np.array([0.0], np.float32),
        np.array([10.0], np.float32),
        np.array([-2.0, 0.0], np.float32),
        np.array([2.0, 4.0], np.float32),
    )
    env = NormalizeWrapper(CounterEnv(), norm)
    env.reset()
    obs, reward, *_ = env.step(np.array([0.5, 0.0]))
    assert obs[0] == pytest.approx(-0.8, abs=1e-5) and reward == pytest.approx(1.0)
    wrong = Normalizer(np.zeros(3, np.float32), np.ones(3, np.float32), np.zeros(2, np.float32), np.ones(2, np.float32))
    with pytest.raises(ValueError, match="obs_min has 3 dims, the env observes 1"):
        NormalizeWrapper(CounterEnv(), wrong)


def test_noise_box_samples_clipped_gaussian():
    box = NoiseBox(1.5, 1000, seed=0)
    draw = box.sample()
    assert draw.shape == (1000,) and np.abs(draw).max() <= 1.5
    assert 0.05 < np.mean(np.abs(draw) == 1.5) < 0.25, "about 13% of N(0,1) draws lie beyond 1.5"
    with pytest.raises(ValueError, match="action_magnitude=0"):
        NoiseBox(0, 3)


def test_noise_expansion_tiles_low_dimensional_noise():
    expand = NoiseExpansion(noise_steps=4, action_dim=7, noise_action_dim=5)
    noise = torch.arange(10.0).view(2, 5)
    full = expand(noise)
    assert expand.noise_dim == 5 and full.shape == (2, 4, 7)
    flat = full.reshape(2, 28)
    np.testing.assert_array_equal(flat[:, :5], noise)
    np.testing.assert_array_equal(flat[:, 25:], noise[:, :3])
    assert torch.equal(flat[:, 5:10], noise), "the k numbers repeat until chunk * action_dim"
    identity = NoiseExpansion(4, 7, noise_action_dim=0)
    assert identity.noise_dim == 28 and torch.equal(identity(flat), full)
    with pytest.raises(ValueError, match=r"noise action has shape \(2, 4\), expected \(B, 5\)"):
        expand(torch.zeros(2, 4))


def test_noise_expansion_projection_keeps_unit_marginals_and_bounds():
    expand = NoiseExpansion(noise_steps=4, action_dim=7, noise_action_dim=3, kind="projection", magnitude=1.5)
    again = NoiseExpansion(noise_steps=4, action_dim=7, noise_action_dim=3, kind="projection", magnitude=1.5)
    assert torch.equal(expand.projection, again.projection), "the projection is fixed, so a saved agent reloads it"
    full = expand(torch.randn(20000, 3, generator=torch.Generator().manual_seed(0))).reshape(-1, 28)
    assert full.abs().max() <= 1.5
    clamped_normal_std = torch.randn(10**6, generator=torch.Generator().manual_seed(1)).clamp(-1.5, 1.5).std()
    assert torch.allclose(full.std(dim=0), clamped_normal_std.expand(28), atol=0.02), "N(0, 1) marginals, clamped"
    small = expand(0.1 * torch.randn(100, 3)).reshape(100, 28)
    assert torch.linalg.matrix_rank(small) == 3, "unclamped, the 28 numbers span only the agent's 3 dimensions"


def test_noise_expansion_rejects_bad_settings():
    with pytest.raises(ValueError, match=r"noise_action_dim=29 is larger than the base policy.s noise \(noise_steps 4"):
        NoiseExpansion(4, 7, noise_action_dim=29)
    with pytest.raises(ValueError, match="noise_expansion='pca'"):
        NoiseExpansion(4, 7, noise_action_dim=3, kind="pca")


def steering_venv(n_envs, normalizer, vec_env="dummy"):
    cfg = dict(suite="steering", name="steering", max_episode_steps=32, n_envs=n_envs, n_eval_envs=1, vec_env=vec_env)
    return make_vec_env(cfg, normalizer, chunk=4, cond_steps=1, n_envs=n_envs)


def first_observations(seed, n_envs, vec_env="dummy"):
    """Each env's first observation (the start position / 2) after ``seed(seed)``, rows in env order."""
    norm = Normalizer(
        np.full(2, -2, np.float32), np.full(2, 2, np.float32), -np.ones(2, np.float32), np.ones(2, np.float32)
    )
    venv = steering_venv(n_envs, norm, vec_env)
    venv.seed(seed)
    obs = venv.reset()
    venv.close()
    return obs


def test_consecutive_run_seeds_share_no_env_stream():
    """SB3 seeds env k with seed + k: seeds 0 and 1 shared 24 of 25 envs' episodes."""
    seeds = {s: env_seeds(s, 25) for s in (0, 1, 10_000, 10_001)}
    assert len(set().union(*map(set, seeds.values()))) == 100
    assert env_seeds(0, 25) == seeds[0] and env_seeds(0, 3) == seeds[0][:3]
    starts = {s: first_observations(s, 25) for s in (0, 1)}
    assert not np.isclose(starts[0][:, None, :], starts[1][None, :, :]).all(-1).any()
    lone = [SteeringEnv().reset(seed=seed)[0] / 2 for seed in seeds[1]]
    np.testing.assert_allclose(starts[1], np.stack(lone), atol=1e-6)
    np.testing.assert_array_equal(first_observations(1, 2, "subproc"), starts[1][:2])
    with pytest.raises(ValueError, match="seed=-1 must be non-negative"):
        env_seeds(-1, 2)


def test_diffusion_env_wrapper_denoises_once_with_current_obs(small_policy):
    from conftest import SMALL_POLICY

    from dsrl.base_policies import build_base_policy

    torch.manual_seed(0)
    policy = build_base_policy(dict(SMALL_POLICY, obs_dim=2)).freeze()
    norm = Normalizer(
        np.full(2, -2, np.float32), np.full(2, 2, np.float32), -np.ones(2, np.float32), np.ones(2, np.float32)
    )
    venv = DiffusionPolicyEnvWrapper(steering_venv(3, norm), policy, action_magnitude=2.0)
    assert venv.action_space.shape == (8,) and venv.action_space.high.max() == 2.0
    obs = venv.reset()
    noise = np.random.default_rng(0).uniform(-2, 2, (3, 8)).astype(np.float32)
    expected = policy(torch.as_tensor(obs), torch.as_tensor(noise).view(3, 4, 2)).reshape(3, -1).numpy()
    _, _, _, infos = venv.step(noise)
    np.testing.assert_allclose(np.stack([i["action_chunk"] for i in infos]), expected)
    with pytest.raises(ValueError, match="does not match the base policy"):
        DiffusionPolicyEnvWrapper(steering_venv(1, norm), small_policy, action_magnitude=1.0)
    low_dim = DiffusionPolicyEnvWrapper(steering_venv(3, norm), policy, action_magnitude=2.0, noise_action_dim=3)
    assert low_dim.action_space.shape == (3,) and low_dim.action_space.high.max() == 2.0
    obs = low_dim.reset()
    _, _, _, infos = low_dim.step(noise[:, :3])
    tiled = torch.as_tensor(noise[:, [0, 1, 2, 0, 1, 2, 0, 1]]).view(3, 4, 2)
    np.testing.assert_allclose(
        np.stack([i["action_chunk"] for i in infos]), policy(torch.as_tensor(obs), tiled).reshape(3, -1).numpy()
    )


def test_env_config_errors_name_the_field():
    good = dict(suite="gym", name="Hopper-v5", max_episode_steps=10, n_envs=1, n_eval_envs=1, vec_env="dummy")
    check_env_config(good)
    with pytest.raises(ValueError, match="env.suite='atari'"):
        check_env_config(dict(good, suite="atari"))
    with pytest.raises(ValueError, match="env.name='Hopper-v99'"):
        check_env_config(dict(good, name="Hopper-v99"))
    with pytest.raises(ValueError, match="env.vec_env='threads'"):
        check_env_config(dict(good, vec_env="threads"))
    with pytest.raises(ValueError, match="env.n_envs=0"):
        check_env_config(dict(good, n_envs=0))


def test_steering_demonstrations_are_bimodal_and_half_successful():
    data, success = collect_demonstrations(200, seed=0)
    rows, chunks = chunk_pairs(data, chunk=4)
    assert rows.shape == (chunks.shape[0], 1) and chunks.shape == (data.traj_lengths.sum(), 4, 2)
    assert 0.4 < success < 0.6
    first_moves = chunks[np.isclose(data.states[rows[:, 0], 1], -1.0, atol=0.06), 0, 0]
    assert (first_moves > 0.2).mean() > 0.35 and (first_moves < -0.2).mean() > 0.35


def test_steering_env_rewards_only_the_right_goal():
    env = SteeringEnv()
    env.reset(seed=0)
    for _ in range(40):
        _, reward, terminated, _, info = env.step(np.array([0.45, 1.0]))
        if terminated:
            break
    assert terminated and info["is_success"] and reward == 1.0
    env.reset(seed=0)
    for _ in range(40):
        _, reward, terminated, _, info = env.step(np.array([-0.45, 1.0]))
        if terminated:
            break
    assert terminated and not info["is_success"] and reward == 0.0


class CountingEnv(gym.Env):
    """Observes how many steps it took since its reset."""

    observation_space = spaces.Box(0, np.inf, (1,), np.float32)
    action_space = spaces.Box(-1, 1, (1,), np.float32)

    def reset(self, *, seed=None, options=None):
        self.steps = 0
        return np.zeros(1, np.float32), {}

    def step(self, action):
        self.steps += 1
        return np.full(1, self.steps, np.float32), 0.0, False, False, {}


def test_prefetch_vec_env_steps_once_per_launch_and_discards_a_pending_step_at_reset():
    inner = DummyVecEnv([lambda: CountingEnv()])
    env = PrefetchVecEnv(inner)
    env.reset()
    actions = np.zeros((1, 1), np.float32)
    env.launch(actions)
    assert inner.envs[0].steps == 0, "DummyVecEnv steps in step_wait"
    obs, *_ = env.step(actions)
    assert inner.envs[0].steps == 1 and obs[0, 0] == 1
    env.step(actions)  # nothing launched: an ordinary step
    assert inner.envs[0].steps == 2
    env.launch(actions)
    with pytest.raises(RuntimeError, match="other actions than the launched step's"):
        env.step(actions.copy())
    with pytest.raises(RuntimeError, match="a launched step is still pending"):
        env.launch(actions)
    env.reset()  # waits for the launched step and discards it
    assert env.launched is None and inner.envs[0].steps == 0
