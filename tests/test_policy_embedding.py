"""Agents observing the base policy's embedding (train.agent_obs=policy_embedding)."""

import glob

import numpy as np
import pytest
import torch
from conftest import SMALL_FLOW_POLICY, SMALL_POLICY, STEERING_CONFIG

from dsrl.base_policies import Normalizer, PolicyEmbeddingView, build_base_policy
from dsrl.base_policies.checkpoint import save_checkpoint
from dsrl.config import compose_task_config, repo_path
from dsrl.envs.diffusion_env import DiffusionPolicyEnvWrapper
from dsrl.envs.embedding_env import PolicyEmbeddingObservation, embed
from dsrl.envs.factory import make_vec_env
from dsrl.training import load_model, run

ENCODER = dict(obs_dim=2, cond_mlp_dims=[16, 6])
STEERING_NORMALIZATION = repo_path("checkpoints/steering/diffusion/normalization.npz")


def encoder_policy(spec):
    torch.manual_seed(0)
    return build_base_policy(dict(spec, **ENCODER)).freeze()


@pytest.mark.parametrize("spec", [SMALL_POLICY, SMALL_FLOW_POLICY], ids=["diffusion", "flow"])
def test_view_of_the_embedding_samples_what_the_policy_samples(spec):
    policy = encoder_policy(spec)
    view = PolicyEmbeddingView(policy)
    obs, noise = torch.rand(32, 2) * 2 - 1, torch.randn(32, 4, 2)
    features = policy.encode(obs)
    torch.testing.assert_close(features, policy.network.cond_mlp(obs))
    assert view.cond_dim == policy.feature_dim == 6 and features.shape == (32, 6)
    torch.testing.assert_close(view(features, noise), policy(obs, noise))
    with pytest.raises(ValueError, match=r"obs has shape \(32, 2\), expected \(B, 6\)"):
        view(obs, noise)


def test_embedding_env_encodes_once_per_step_and_denoising_reuses_it():
    policy = encoder_policy(SMALL_POLICY)
    normalizer = Normalizer.load(STEERING_NORMALIZATION)
    cfg = dict(suite="steering", name="steering", max_episode_steps=3, n_envs=2, n_eval_envs=1, vec_env="dummy")
    raw = make_vec_env(cfg, normalizer, chunk=4, cond_steps=1, n_envs=2)
    venv = DiffusionPolicyEnvWrapper(
        PolicyEmbeddingObservation(raw, policy), PolicyEmbeddingView(policy), action_magnitude=1.5
    )
    assert venv.observation_space.shape == (6,) and venv.action_space.shape == (8,)
    encoded = []
    policy.network.cond_mlp.register_forward_hook(lambda module, args, out: encoded.append(len(args[0])))
    raw_obs = []
    original_reset, original_wait = raw.reset, raw.step_wait
    raw.reset = lambda: raw_obs.append(original_reset()) or raw_obs[-1]
    raw.step_wait = lambda: (lambda out: raw_obs.append(out[0]) or out)(original_wait())
    obs = venv.reset()
    np.testing.assert_allclose(obs, embed(policy, raw_obs[-1]), atol=1e-6)
    noise = np.random.default_rng(0).standard_normal((2, 8)).astype(np.float32).clip(-1.5, 1.5)
    expected = policy(torch.as_tensor(raw_obs[-1]), torch.as_tensor(noise).view(2, 4, 2)).reshape(2, -1).numpy()
    encoded.clear()
    obs, _, dones, infos = venv.step(noise)
    assert dones.all(), "3 simulator steps per episode: one chunk ends it"
    assert encoded == [4], "one pass encodes the new and the terminal observations; denoising reuses features"
    np.testing.assert_allclose(np.stack([i["action_chunk"] for i in infos]), expected, atol=1e-6)
    assert all(info["terminal_observation"].shape == (6,) for info in infos)
    with pytest.raises(ValueError, match="does not match the base policy's cond_dim 6"):
        PolicyEmbeddingObservation(raw, PolicyEmbeddingView(policy))


@pytest.mark.parametrize("algorithm", ["dsrl_na", "dsrl_sac"])
def test_runs_with_policy_embedding_observations(tmp_path, algorithm):
    cfg = compose_task_config(
        STEERING_CONFIG,
        [
            f"run_dir={tmp_path}",
            "wandb.mode=disabled",
            f"algorithm={algorithm}",
            "train.agent_obs=policy_embedding",
            "base_policy.cond_mlp_dims=[16,6]",
            f"base_policy.checkpoint={tmp_path / 'encoder.pt'}",
            f"base_policy.normalization={STEERING_NORMALIZATION}",
            "train.total_env_steps=600",
            "train.init_rollout_steps=25",
            "eval.interval_env_steps=0",
            "eval.n_episodes=4",
            "train.noise_action_dim=3",
        ],
    )
    torch.manual_seed(0)
    policy = build_base_policy(dict(cfg.base_policy)).freeze()
    save_checkpoint(str(tmp_path / "encoder.pt"), policy, policy, epoch=1)
    result = run(cfg)
    assert 0.0 <= result["success_rate"] <= 1.0
    venv = make_vec_env(dict(cfg.env), Normalizer.load(STEERING_NORMALIZATION), 4, 1, 1)
    (saved,) = glob.glob(str(tmp_path / "checkpoints" / "model_*.zip"))
    model = load_model(cfg, saved, venv, policy, "cpu")
    assert model.observation_space.shape == (6,), "actor and critics observe the 6 encoder features"
    assert model.action_space.shape == ((3,) if algorithm == "dsrl_sac" else (8,))
