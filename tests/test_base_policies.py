"""Base policies: DPPO golden vectors, checkpoint loading errors, determinism, normalisation."""

import ast
import glob
import os

import numpy as np
import pytest
import torch
from conftest import GOLDEN_DIR, SMALL_FLOW_POLICY, SMALL_POLICY, policy_files

from dsrl.base_policies import FlowPolicy, Normalizer, build_base_policy, load_base_policy
from dsrl.base_policies.checkpoint import save_checkpoint
from dsrl.config import compose_task_config, repo_path

CONFIG_KEYS = (
    "obs_dim",
    "action_dim",
    "horizon_steps",
    "cond_steps",
    "mlp_dims",
    "cond_mlp_dims",
    "activation_type",
    "denoising_steps",
    "ddim_steps",
    "time_dim",
    "residual_style",
    "denoised_clip_value",
)


def golden(name):
    data = np.load(os.path.join(GOLDEN_DIR, f"{name}_golden.npz"))
    config = ast.literal_eval(str(data["config"]))
    cfg = {"type": "diffusion", "checkpoint": os.path.join(GOLDEN_DIR, f"{name}_state.pt")}
    cfg.update({k: config[k] for k in CONFIG_KEYS})
    return data, cfg


@pytest.mark.parametrize("name", ["gym_hopper", "robomimic_can"])
def test_golden_vectors_reproduced(name):
    data, cfg = golden(name)
    policy = load_base_policy(cfg)
    obs = torch.as_tensor(data["state"]).reshape(len(data["state"]), -1)
    noise = torch.as_tensor(data["noise"])
    assert policy.ddim_t.tolist() == data["ddim_t"].tolist()
    eps = policy.network(noise, torch.full((len(obs),), int(data["first_t"])), obs)
    np.testing.assert_allclose(eps.detach().numpy(), data["eps_first_step"], atol=1e-5)
    np.testing.assert_allclose(policy(obs, noise).numpy(), data["actions"], atol=1e-5)


def test_ema_weights_are_preferred(tmp_path):
    data, cfg = golden("gym_hopper")
    state = torch.load(cfg["checkpoint"], weights_only=True)
    corrupted = {k: torch.zeros_like(v) for k, v in state["model"].items()}
    path = tmp_path / "ema_first.pt"
    torch.save({"epoch": 1, "model": corrupted, "ema": state["ema"]}, path)
    policy = load_base_policy(dict(cfg, checkpoint=str(path)))
    obs = torch.as_tensor(data["state"]).reshape(len(data["state"]), -1)
    np.testing.assert_allclose(policy(obs, torch.as_tensor(data["noise"])).numpy(), data["actions"], atol=1e-5)


def test_mismatched_checkpoint_names_key_and_shapes():
    _, cfg = golden("robomimic_can")
    with pytest.raises(ValueError, match=r"network\.mlp_mean\.layers\.0\.weight.*\(512, 67\).*\(512, 66\)"):
        load_base_policy(dict(cfg, obs_dim=22))
    with pytest.raises(ValueError, match=r"lacks key 'network\.mlp_mean\.layers\.2\.l1\.weight'"):
        load_base_policy(dict(cfg, mlp_dims=[512] * 5))


def test_missing_checkpoint_and_unknown_keys_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.pt"):
        load_base_policy(dict(SMALL_POLICY, checkpoint=str(tmp_path / "nowhere.pt")))
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['ddim_stpes'\]"):
        build_base_policy(dict(SMALL_POLICY, ddim_stpes=3))
    with pytest.raises(ValueError, match="base_policy.type='unet'"):
        build_base_policy(dict(SMALL_POLICY, type="unet"))


@pytest.mark.parametrize(
    "overrides",
    [
        dict(cond_steps=3, cond_mlp_dims=[16, 8]),
        dict(mlp_dims=[24] * 5, activation_type="ReLU"),
        dict(residual_style=False, mlp_dims=[16, 32], use_layernorm=True),
        dict(denoising_steps=100, ddim_steps=8),
    ],
)
def test_variants_round_trip_through_dppo_checkpoints(tmp_path, overrides):
    cfg = dict(SMALL_POLICY, **overrides)
    torch.manual_seed(1)
    policy = build_base_policy(cfg).freeze()
    path = str(tmp_path / "state.pt")
    save_checkpoint(path, policy, policy, epoch=3)
    assert all(k.startswith("network.") for k in torch.load(path, weights_only=True)["ema"])
    loaded = load_base_policy(dict(cfg, checkpoint=path))
    obs = torch.randn(6, cfg["obs_dim"] * cfg.get("cond_steps", 1))
    noise = torch.randn(6, cfg["horizon_steps"], cfg["action_dim"])
    first = loaded(obs, noise)
    assert torch.equal(first, loaded(obs, noise)), "same noise must give the same action"
    assert torch.equal(first, policy(obs, noise))
    assert not torch.allclose(first, loaded(obs, torch.randn_like(noise)))


def test_ddim_timesteps_follow_leading_spacing():
    policy = build_base_policy(dict(SMALL_POLICY, denoising_steps=100, ddim_steps=8))
    assert policy.ddim_t.tolist() == [84, 72, 60, 48, 36, 24, 12, 0]
    assert policy.ddim_alpha_prev[-1].item() == 1.0


def test_policy_is_frozen_and_checks_shapes(small_policy):
    assert not any(p.requires_grad for p in small_policy.parameters())
    with pytest.raises(ValueError, match=r"noise has shape \(2, 3, 2\), expected \(2, 4, 2\)"):
        small_policy(torch.zeros(2, 3), torch.zeros(2, 3, 2))
    with pytest.raises(ValueError, match=r"obs has shape \(2, 5\), expected \(B, 3\)"):
        small_policy(torch.zeros(2, 5), torch.zeros(2, 4, 2))


def test_flow_policy_integrates_euler_steps_from_the_noise():
    policy = build_base_policy(dict(SMALL_FLOW_POLICY, flow_steps=4, final_action_clip_value=None))
    assert isinstance(policy, FlowPolicy)
    policy.freeze()
    obs, noise = torch.randn(5, 3), torch.randn(5, 4, 2)
    x = noise.clone()
    for i in range(4):
        x = x + 0.25 * policy.network(x, torch.full((5,), i / 4 * policy.time_scale), obs)
    torch.testing.assert_close(policy(obs, noise), x)


def bc_data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    obs = rng.uniform(-1, 1, (512, 3)).astype(np.float32)
    return obs, np.repeat(np.tanh(obs[:, :2])[:, None], 4, axis=1).astype(np.float32)


def test_bc_loss_decreases_for_both_policy_types():
    from dsrl.pretrain import BehaviourCloning

    for cfg in (SMALL_POLICY, SMALL_FLOW_POLICY):
        cloning = BehaviourCloning(build_base_policy(cfg), *bc_data(), steps=300, batch_size=128)
        losses = [cloning.train_step() for _ in range(300)]
        assert np.mean(losses[-30:]) < 0.5 * np.mean(losses[:30])


def test_bc_resumed_from_its_state_dict_takes_the_same_steps(tmp_path):
    from dsrl.pretrain import BehaviourCloning

    def cloning() -> BehaviourCloning:
        torch.manual_seed(0)
        return BehaviourCloning(build_base_policy(SMALL_POLICY), *bc_data(), steps=40, batch_size=32, warmup_steps=5)

    straight = cloning()
    for _ in range(40):
        straight.train_step()
    stopped = cloning()
    for _ in range(25):
        stopped.train_step()
    torch.save(stopped.state_dict(), tmp_path / "state.pt")
    torch.randn(100)  # the process that resumes has drawn other random numbers
    resumed = cloning()
    resumed.load_state_dict(torch.load(tmp_path / "state.pt", weights_only=True))
    assert resumed.step == 25 and resumed.scheduler.get_last_lr() == stopped.scheduler.get_last_lr()
    losses = [resumed.train_step() for _ in range(15)]
    assert resumed.step == 40 and np.isfinite(losses).all()
    for name in ("policy", "ema"):
        for a, b in zip(getattr(resumed, name).state_dict().values(), getattr(straight, name).state_dict().values()):
            torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_normalizer_round_trip_and_missing_array(tmp_path):
    norm = Normalizer.fit(np.array([[0.0, 10.0], [2.0, 20.0]]), np.array([[-2.0], [2.0]]))
    np.testing.assert_allclose(norm.normalize_obs(np.array([1.0, 15.0])), [0.0, 0.0], atol=1e-5)
    np.testing.assert_allclose(norm.normalize_obs(np.array([2.0, 20.0])), [1.0, 1.0], atol=1e-5)
    np.testing.assert_allclose(norm.unnormalize_action(np.array([0.5])), [1.0])
    path = str(tmp_path / "n.npz")
    norm.save(path)
    loaded = Normalizer.load(path)
    for key in ("obs_min", "obs_max", "action_min", "action_max"):
        np.testing.assert_array_equal(getattr(loaded, key), getattr(norm, key))
    np.savez(tmp_path / "bad.npz", obs_min=norm.obs_min, obs_max=norm.obs_max, action_min=norm.action_min)
    with pytest.raises(ValueError, match=r"bad.npz.*lacks array\(s\) \['action_max'\]"):
        Normalizer.load(str(tmp_path / "bad.npz"))


TASK_CONFIGS = sorted(glob.glob(repo_path("cfg/*/dsrl_*.yaml")))
WITHOUT_SHIPPED_POLICY = {"dsrl_transport.yaml"}


@pytest.mark.parametrize("config", TASK_CONFIGS, ids=lambda path: os.path.basename(path)[5:-5])
def test_every_shipped_checkpoint_loads_through_its_task_config(config):
    base = compose_task_config(config, ["run_dir=unused"]).base_policy
    if os.path.basename(config) in WITHOUT_SHIPPED_POLICY:
        assert not os.path.exists(base.checkpoint), f"{base.checkpoint} is shipped: take its config off the list"
        pytest.skip("no shipped base policy for this task yet")
    policy = load_base_policy(base)
    Normalizer.load(base.normalization).require_dims(base.obs_dim, base.action_dim, base.normalization)
    assert policy.obs_dim == base.obs_dim and policy.action_dim == base.action_dim


SHIPPED_FLOW_POLICIES = sorted(glob.glob(repo_path("checkpoints/*/*/flow")))


@pytest.mark.parametrize("folder", SHIPPED_FLOW_POLICIES, ids=lambda path: path.split(os.sep)[-2])
def test_every_shipped_flow_checkpoint_loads_through_its_task_config_with_type_flow(folder):
    suite, task = folder.split(os.sep)[-3:-1]
    cfg = compose_task_config(
        repo_path(f"cfg/{suite}/dsrl_{task}.yaml"), ["base_policy.type=flow", *policy_files(folder)]
    )
    policy = load_base_policy(cfg.base_policy)
    assert isinstance(policy, FlowPolicy) and policy.obs_dim == cfg.base_policy.obs_dim


@pytest.mark.parametrize(
    "override, error",
    [
        ([], r"base_policy.type='diffusion', but checkpoint .*flow/state.pt' was trained with type='flow'"),
        (
            ["base_policy.type=flow", "base_policy.activation_type=ReLU"],
            r"activation_type='ReLU', but .* was trained with activation_type='Mish'",
        ),
    ],
)
def test_a_checkpoint_is_refused_for_settings_its_card_says_it_was_not_trained_with(override, error):
    """Same shapes, other maths: a flow checkpoint read as a diffusion policy, or with another activation."""
    folder = repo_path("checkpoints/steering/flow")
    cfg = compose_task_config(repo_path("cfg/steering/dsrl_steering.yaml"), [*policy_files(folder), *override])
    with pytest.raises(ValueError, match=error):
        load_base_policy(cfg.base_policy)
