"""SACDiffusionNoise (DSRL-NA) and the batched critic ensemble."""

import math

import numpy as np
import pytest
import torch
from conftest import SMALL_POLICY
from torch import nn

from dsrl.algorithms.networks import EnsembleCritic
from dsrl.algorithms.sac_diffusion_noise import SACDiffusionNoise, batches, combine
from dsrl.base_policies import Normalizer, PolicyEmbeddingView, build_base_policy
from dsrl.base_policies.lerobot_adapter import LeRobotDiffusionAdapter
from dsrl.envs.factory import make_vec_env
from dsrl.envs.prefetch import PrefetchVecEnv
from dsrl.replay_files import load_replay_buffer, save_replay_buffer
from dsrl.training import learning_starts

MAGNITUDE = 0.8


@pytest.fixture
def steering_policy():
    torch.manual_seed(0)
    return build_base_policy(dict(SMALL_POLICY, obs_dim=2)).freeze()


def make_model(policy, wrap=None, **overrides):
    norm = Normalizer(
        np.full(2, -2, np.float32), np.full(2, 2, np.float32), -np.ones(2, np.float32), np.ones(2, np.float32)
    )
    cfg = dict(suite="steering", name="steering", max_episode_steps=32, n_envs=2, n_eval_envs=1, vec_env="dummy")
    env = make_vec_env(cfg, norm, chunk=4, cond_steps=1, n_envs=2)
    env = wrap(env) if wrap else env
    kwargs = dict(
        base_policy=policy,
        action_magnitude=MAGNITUDE,
        learning_starts=20,
        batch_size=32,
        gradient_steps=2,
        noise_critic_grad_steps=3,
        policy_kwargs=dict(net_arch=[32, 32], activation_fn=nn.Tanh),
        seed=0,
        device="cpu",
    )
    kwargs.update(overrides)
    return SACDiffusionNoise("NoiseAliasingPolicy", env, **kwargs)


def test_noise_actor_is_bounded_by_action_magnitude_and_predict_denoises(steering_policy):
    model = make_model(steering_policy)
    obs = np.random.default_rng(0).uniform(-1, 1, (64, 2)).astype(np.float32)
    noise, _ = model.predict_noise(obs)
    assert noise.shape == (64, 8) and np.abs(noise).max() <= MAGNITUDE
    assert np.abs(noise).max() > 0.5 * MAGNITUDE
    chunks, _ = model.predict(obs, deterministic=True)
    mean_noise, _ = model.predict_noise(obs, deterministic=True)
    expected = steering_policy(torch.as_tensor(obs), torch.as_tensor(mean_noise).view(64, 4, 2)).reshape(64, -1)
    np.testing.assert_allclose(chunks, expected.numpy(), atol=1e-6)


@pytest.mark.parametrize("kind", ["tile", "projection"])
def test_low_dimensional_noise_is_expanded_for_acting_targets_and_distillation(steering_policy, tmp_path, kind):
    model = make_model(
        steering_policy, noise_action_dim=3, noise_expansion=kind, precompute_distillation=True, buffer_size=50
    )
    assert model.noise_space.shape == (3,) and model.actor.action_space.shape == (3,)
    obs = np.random.default_rng(0).uniform(-1, 1, (16, 2)).astype(np.float32)
    noise, _ = model.predict_noise(obs, deterministic=True)
    assert noise.shape == (16, 3) and np.abs(noise).max() <= MAGNITUDE
    chunks, _ = model.predict(obs, deterministic=True)
    full = model.expansion(torch.as_tensor(noise))
    np.testing.assert_allclose(chunks, steering_policy(torch.as_tensor(obs), full).reshape(16, -1).numpy(), atol=1e-6)
    if kind == "tile":
        np.testing.assert_array_equal(full.reshape(16, 8).numpy(), noise[:, [0, 1, 2, 0, 1, 2, 0, 1]])

    model.learn(30)
    buffer = model.replay_buffer
    assert buffer.distill_noise.shape == (25, 2, 3) and buffer.actions.shape == (25, 2, 8)
    pair_obs, pair_noise = buffer.observations[:15].reshape(-1, 2), buffer.distill_noise[:15].reshape(-1, 3)
    expected = steering_policy(torch.as_tensor(pair_obs), model.expansion(torch.as_tensor(pair_noise)))
    np.testing.assert_allclose(buffer.distill_actions[:15].reshape(-1, 8), expected.reshape(-1, 8).numpy(), atol=1e-5)

    model.save(tmp_path / "low_dim.zip")
    loaded = SACDiffusionNoise.load(tmp_path / "low_dim.zip", env=model.env, base_policy=steering_policy)
    assert loaded.noise_space.shape == (3,) and loaded.noise_expansion == kind
    trained = model.predict(obs, deterministic=True)[0]
    np.testing.assert_allclose(loaded.predict(obs, deterministic=True)[0], trained, atol=1e-6)


def test_replay_buffer_stores_real_chunks(steering_policy):
    model = make_model(steering_policy)
    played, original = [], model.chunks_for_noise

    def record(observation, noise):
        chunks = original(observation, noise)
        played.append(chunks)
        return chunks

    model.chunks_for_noise = record
    model.learn(40)
    stored = model.replay_buffer.actions[: model.replay_buffer.pos]
    assert len(played) == 20, "one denoising per vector step (2 envs x 20 steps), warm-up included"
    np.testing.assert_array_equal(stored, np.stack(played))


def test_distillation_noise_respects_action_magnitude(steering_policy):
    model = make_model(steering_policy, precompute_distillation=False)  # a fresh batch per distillation step
    model.learn(30)
    seen = []
    original = model.denoise

    def spy(obs, scaled_noise):
        seen.append(scaled_noise.detach().clone())
        return original(obs, scaled_noise)

    model.denoise = spy
    model.train(gradient_steps=2, batch_size=256)
    # 2 TD targets (actor's next noise) + 3 distillation batches
    assert len(seen) == 5
    distill = torch.cat(seen[2:])
    assert distill.abs().max() <= 1.0, "scaled distillation noise must stay in [-1, 1], i.e. within ±action_magnitude"
    assert (distill.abs() == 1.0).float().mean() > 0.05, "N(0, I) draws beyond the magnitude are clipped to it"


def test_precomputed_distillation_pairs_are_the_base_policys_chunks(steering_policy, tmp_path):
    model = make_model(steering_policy, precompute_distillation=True, buffer_size=50)
    model.learn(30)  # 15 rows of 2 env slots; training (and pairing) starts after 10 rows
    buffer = model.replay_buffer
    assert buffer.rows_added == 15 and buffer.rows_paired == 15 and not len(buffer.unpaired_rows())
    obs, noise = buffer.observations[:15].reshape(-1, 2), buffer.distill_noise[:15].reshape(-1, 8)
    assert np.abs(noise).max() <= MAGNITUDE + 1e-6 and np.isclose(np.abs(noise), MAGNITUDE).mean() > 0.05
    expected = steering_policy(torch.as_tensor(obs), torch.as_tensor(noise).view(-1, 4, 2)).reshape(-1, 8)
    np.testing.assert_allclose(buffer.distill_actions[:15].reshape(-1, 8), expected.numpy(), atol=1e-5)

    model.learn(30, reset_num_timesteps=False)  # 15 more rows wrap around the 25-row ring (50 / 2 env slots)
    assert buffer.full and buffer.rows_paired == 30
    fresh = (buffer.pos - 15 + np.arange(15)) % 25
    obs, noise = buffer.observations[fresh].reshape(-1, 2), buffer.distill_noise[fresh].reshape(-1, 8)
    expected = steering_policy(torch.as_tensor(obs), torch.as_tensor(noise).view(-1, 4, 2)).reshape(-1, 8)
    np.testing.assert_allclose(buffer.distill_actions[fresh].reshape(-1, 8), expected.numpy(), atol=1e-5)

    calls = []
    original = model.denoise
    model.denoise = lambda obs, noise: calls.append(len(obs)) or original(obs, noise)
    model.train(gradient_steps=2, batch_size=64)
    assert calls == [64, 64], "only the TD targets denoise; distillation reads the stored pairs"
    model.save_replay_buffer(tmp_path / "buffer.pkl")
    loaded = make_model(steering_policy, precompute_distillation=True, buffer_size=50)
    loaded.load_replay_buffer(tmp_path / "buffer.pkl")
    np.testing.assert_array_equal(loaded.replay_buffer.distill_actions, buffer.distill_actions)


def test_noise_critic_gap_is_what_q_w_overrates_at_the_actors_noise(steering_policy):
    model = make_model(steering_policy)
    model.learn(30)
    overrate = 2.5

    def aliased(obs, scaled_noise):  # Q_W = the target Q_A of the chunk the noise denoises to, plus 2.5
        return model.critic_target.all_q(obs, model.denoise(obs, scaled_noise)) + overrate

    model.noise_critic.all_q = aliased
    model.noise_critic_grad_steps = 0
    model.train(gradient_steps=3, batch_size=64)
    assert model.logger.name_to_value["train/noise_critic_gap"] == pytest.approx(overrate, abs=1e-5)


def test_q_value_is_the_mean_of_q_a_over_the_batch_and_the_ensemble(steering_policy):
    model = make_model(steering_policy, policy_kwargs=dict(net_arch=[8], n_critics=3))
    model.learn(30)
    original = model.critic.all_q
    members = torch.tensor([1.0, 2.0, 6.0]).view(3, 1, 1)
    model.critic.all_q = lambda obs, actions: 0 * original(obs, actions) + members  # (3, B, 1), mean 3
    model.train(gradient_steps=2, batch_size=16)
    assert model.logger.name_to_value["train/q_value"] == pytest.approx(3.0)


@pytest.mark.parametrize("backup, actor, q_pi", [("min", None, 1.0), ("mean", None, 3.0), ("min", "mean", 3.0)])
def test_the_actor_combines_the_noise_critics_as_told(steering_policy, backup, actor, q_pi):
    model = make_model(
        steering_policy,
        policy_kwargs=dict(net_arch=[8], n_critics=3),
        critic_backup_combine_type=backup,
        actor_combine_type=actor,
        ent_coef=0.0,
    )
    model.learn(30)
    original = model.noise_critic.all_q
    members = torch.tensor([1.0, 2.0, 6.0]).view(3, 1, 1)
    model.noise_critic.all_q = lambda obs, noise: 0 * original(obs, noise) + members  # (3, B, 1): min 1, mean 3
    model.train(gradient_steps=2, batch_size=16)
    assert model.logger.name_to_value["train/actor_loss"] == pytest.approx(-q_pi)  # α = 0: the loss is -Q_W


class MemberIndex(nn.Module):
    """A stand-in critic network whose member i values every input at i: (n, B, in) -> (n, B, 1)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.arange(len(x), dtype=x.dtype).view(-1, 1, 1).expand(-1, x.shape[1], 1)


@pytest.mark.parametrize("target_critics, mean_target", [(0, 0.0), (1, 1.5), (3, 0.25)])
def test_td_target_takes_the_min_over_a_random_subset_of_target_critics(steering_policy, target_critics, mean_target):
    model = make_model(steering_policy, policy_kwargs=dict(net_arch=[8], n_critics=4, target_critics=target_critics))
    assert (model.critic_target.subset_size, model.critic.subset_size) == (target_critics, 0)
    model.learn(30)
    model.critic_target.q_net = MemberIndex()  # target critic i values everything at i
    model.noise_critic.all_q = lambda obs, noise: torch.zeros(4, len(obs), 1)
    model.noise_critic_grad_steps = 0
    model.train(gradient_steps=400, batch_size=4)
    # noise_critic_gap = 0 - (min over the drawn target critics), averaged over the 400 steps: all four: min 0;
    # one of four: uniform over 0..3, mean 1.5; three of four: min 1 when member 0 is left out (1/4), else 0
    assert -model.logger.name_to_value["train/noise_critic_gap"] == pytest.approx(mean_target, abs=0.15)


def test_dsrl_sac_policy_draws_target_subsets_and_keeps_them_through_save_load(tmp_path):
    from stable_baselines3 import SAC

    from dsrl.algorithms.policies import DSRLSACPolicy

    kwargs = dict(net_arch=[8], n_critics=5, target_critics=2)
    model = SAC(DSRLSACPolicy, "Pendulum-v1", policy_kwargs=kwargs, seed=0, device="cpu")
    model.save(tmp_path / "sac.zip")
    loaded = SAC.load(tmp_path / "sac.zip", device="cpu")
    for m in (model, loaded):
        assert (m.critic_target.subset_size, m.critic.subset_size) == (2, 0)
        obs, actions = torch.zeros(3, 3), torch.zeros(3, 1)
        assert len(m.critic_target(obs, actions)) == 2 and len(m.critic(obs, actions)) == 5
    with pytest.raises(ValueError, match=r"target_critics=6 must lie in \[0, n_critics=5\]"):
        SAC(DSRLSACPolicy, "Pendulum-v1", policy_kwargs=dict(kwargs, target_critics=6), device="cpu")


def test_a_zero_initialised_actor_starts_at_zero_noise_in_every_state_and_learns_away_from_it(
    steering_policy, tmp_path
):
    obs = np.random.default_rng(0).uniform(-1, 1, (64, 2)).astype(np.float32)
    random_init = make_model(steering_policy)
    assert np.abs(random_init.predict_noise(obs, deterministic=True)[0]).mean() > 0.1  # SB3's init: off zero
    model = make_model(
        steering_policy, policy_kwargs=dict(net_arch=[32, 32], activation_fn=nn.Tanh, actor_zero_init=True)
    )
    np.testing.assert_array_equal(model.predict_noise(obs, deterministic=True)[0], 0.0)
    mean, log_std, _ = model.actor.get_action_dist_params(torch.as_tensor(obs))
    assert mean.abs().max() == 0 and log_std.abs().max() == 0  # samples: action_magnitude * tanh(N(0, I))
    model.learn(80)
    trained = model.predict_noise(obs, deterministic=True)[0]
    assert np.abs(trained).max() > 0
    model.save(tmp_path / "model.zip")
    loaded = SACDiffusionNoise.load(tmp_path / "model.zip", base_policy=steering_policy, device="cpu")
    assert loaded.policy.actor_zero_init and loaded.actor.zero_init
    np.testing.assert_array_equal(loaded.predict_noise(obs, deterministic=True)[0], trained)  # weights, not re-zeroed


@pytest.mark.parametrize("prior_scale", [1.0, 0.5])
def test_kl_to_base_noise_weighs_a_sample_of_the_actors_divergence_from_its_prior(steering_policy, prior_scale):
    """The prior is the base policy's N(0, I) noise times kl_prior_noise_scale."""
    magnitude = 2.5
    model = make_model(
        steering_policy, action_magnitude=magnitude, kl_to_base_noise=True, kl_prior_noise_scale=prior_scale
    )
    obs = torch.as_tensor(np.random.default_rng(0).uniform(-1, 1, (4096, 2)).astype(np.float32))
    scaled, log_prob = model.actor.action_log_prob(obs)
    mean, log_std, _ = model.actor.get_action_dist_params(obs)
    actor = torch.distributions.TransformedDistribution(
        torch.distributions.Independent(torch.distributions.Normal(mean, log_std.exp()), 1),
        [torch.distributions.TanhTransform(), torch.distributions.AffineTransform(0.0, magnitude)],
    )
    inside = scaled.abs().amax(-1) < 0.99  # away from tanh's saturation, where SB3's log-prob adds an epsilon
    assert inside.float().mean() > 0.5
    noise = magnitude * scaled
    prior_std = torch.full((8,), prior_scale)
    prior = torch.distributions.Independent(torch.distributions.Normal(torch.zeros(8), prior_std), 1)
    expected = actor.log_prob(noise) - prior.log_prob(noise)
    got = model.regularised_log_prob(scaled, log_prob).reshape(-1)
    assert torch.allclose(got[inside], expected[inside], atol=1e-3), (got - expected)[inside].abs().max()
    model.kl_to_base_noise = False
    assert torch.equal(model.regularised_log_prob(scaled, log_prob).reshape(-1), log_prob)


@pytest.mark.parametrize(
    "kl_to_base_noise, prior_scale, low, high", [(True, 1.0, 0.8, 1.1), (True, 0.5, 0.2, 0.45), (False, 1.0, 1.9, 2.5)]
)
def test_a_heavy_kl_to_base_noise_holds_the_actor_at_its_prior_where_entropy_spreads_it(
    steering_policy, kl_to_base_noise, prior_scale, low, high
):
    """With the term dominating the actor's loss, its noise's second moment goes to the prior's under the KL
    (N(0, I): 1, clipped at 2.5: 0.96; N(0, 0.25 I): 0.25, reached from above: 0.27-0.42 after these 400 steps
    over model seeds 0-5), and to the box's uniform one (2.08) under SAC's entropy; a fresh actor's is 2.9.
    The update logs the term it weighs."""
    model = make_model(
        steering_policy,
        action_magnitude=2.5,
        kl_to_base_noise=kl_to_base_noise,
        kl_prior_noise_scale=prior_scale,
        ent_coef=100.0,
        learning_rate=3e-3,
    )
    model.learn(40)
    model.train(gradient_steps=400, batch_size=64)
    obs = np.random.default_rng(1).uniform(-1, 1, (2048, 2)).astype(np.float32)
    second_moment = float((model.predict_noise(obs)[0] ** 2).mean())
    assert low < second_moment < high
    # The logged term: the KL sample's mean near 0, or the entropy near the box uniform's maximum 8 log 2 = 5.55.
    model.train(gradient_steps=20, batch_size=256)
    name, low, high = ("kl_to_base_noise", 0.0, 0.5) if kl_to_base_noise else ("entropy", 5.0, 8 * math.log(2))
    assert low < model.logger.name_to_value[f"train/{name}"] < high


def test_dsrl_sac_policy_zero_initialises_its_actor():
    from stable_baselines3 import SAC

    from dsrl.algorithms.policies import DSRLSACPolicy

    model = SAC(DSRLSACPolicy, "Pendulum-v1", policy_kwargs=dict(net_arch=[8], actor_zero_init=True), device="cpu")
    np.testing.assert_array_equal(model.actor(torch.rand(5, 3), deterministic=True).detach().numpy(), 0.0)


def test_save_load_continues_training_identically(steering_policy, tmp_path):
    model = make_model(steering_policy)
    model.learn(60)
    model.save(tmp_path / "model.zip")
    model.save_replay_buffer(tmp_path / "buffer.pkl")
    assert "base_policy" in model._excluded_save_params(), "the base policy is referenced by config, not pickled"
    loaded = SACDiffusionNoise.load(
        tmp_path / "model.zip", env=model.get_env(), base_policy=steering_policy, device="cpu"
    )
    loaded.load_replay_buffer(tmp_path / "buffer.pkl")
    loaded.set_logger(model.logger)
    for a, b in zip(model.policy.state_dict().values(), loaded.policy.state_dict().values()):
        assert torch.equal(a, b)
    assert any(k.startswith("noise_critic.") for k in loaded.policy.state_dict())
    assert torch.equal(model.log_ent_coef, loaded.log_ent_coef)
    for name in ("actor", "critic", "noise_critic"):
        saved = getattr(model, name).optimizer.state_dict()["state"]
        restored = getattr(loaded, name).optimizer.state_dict()["state"]
        assert all(torch.equal(saved[k]["exp_avg"], restored[k]["exp_avg"]) for k in saved)
    for m in (model, loaded):
        torch.manual_seed(7)
        np.random.seed(7)
        m.train(gradient_steps=3, batch_size=32)
    for (key, a), b in zip(model.policy.state_dict().items(), loaded.policy.state_dict().values()):
        assert torch.equal(a, b), key
    assert model.action_magnitude == loaded.action_magnitude == MAGNITUDE


def test_load_without_base_policy_is_a_clear_error(steering_policy, tmp_path):
    model = make_model(steering_policy)
    model.save(tmp_path / "model.zip")
    with pytest.raises(ValueError, match="needs base_policy="):
        SACDiffusionNoise.load(tmp_path / "model.zip", env=model.get_env(), device="cpu")


def test_fixed_entropy_coefficient_and_mean_backup(steering_policy):
    model = make_model(steering_policy, ent_coef=0.05, critic_backup_combine_type="mean", backup_entropy=False)
    model.learn(40)
    assert model.ent_coef_optimizer is None and model.ent_coef_tensor.item() == pytest.approx(0.05)
    values = torch.tensor([[[1.0]], [[3.0]]])
    assert combine(values, "mean").item() == 2.0 and combine(values, "min").item() == 1.0


@pytest.mark.parametrize("noise_action_dim, noise_dim", [(0, 8), (3, 3)])  # the chunk's 4 x 2 noise, or 3 numbers
def test_automatic_target_entropy_counts_the_actors_noise_not_the_envs_chunk(
    steering_policy, noise_action_dim, noise_dim
):
    model = make_model(steering_policy, target_entropy="auto", noise_action_dim=noise_action_dim)
    assert model.actor.action_space.shape == (noise_dim,) and model.target_entropy == -noise_dim


def test_bad_settings_are_named(steering_policy):
    with pytest.raises(ValueError, match="action_magnitude=0"):
        make_model(steering_policy, action_magnitude=0.0)
    with pytest.raises(ValueError, match="critic_backup_combine_type='max'"):
        make_model(steering_policy, critic_backup_combine_type="max")
    with pytest.raises(ValueError, match="actor_combine_type='max' is not None or one of"):
        make_model(steering_policy, actor_combine_type="max")
    with pytest.raises(ValueError, match="n_steps=3 is not supported"):
        make_model(steering_policy, n_steps=3)
    wrong = build_base_policy(dict(SMALL_POLICY, obs_dim=2, action_dim=3))
    with pytest.raises(ValueError, match=r"env action shape \(8,\) does not match"):
        make_model(wrong)


def test_overlapped_env_steps_play_the_chunks_chosen_before_each_update(steering_policy):
    model = make_model(steering_policy, wrap=PrefetchVecEnv, overlap_env_steps=True)
    events = []
    env, train = model.env, model.train
    assert isinstance(env, PrefetchVecEnv)
    launch = env.launch
    env.launch = lambda actions: events.append(("launch", actions.copy())) or launch(actions)
    model.train = lambda *args, **kwargs: events.append(("train", None)) or train(*args, **kwargs)
    model.learn(40)
    kinds = [kind for kind, _ in events]
    assert kinds.count("train") == 10 and kinds.count("launch") == 20  # 20 vector steps, learning from the 11th
    assert all(kinds[i - 1] == "launch" for i, kind in enumerate(kinds) if kind == "train"), (
        "each update runs while the step it follows is launched"
    )
    launched = np.stack([actions for kind, actions in events if kind == "launch"])
    stored = model.replay_buffer.actions[: model.replay_buffer.pos]
    np.testing.assert_array_equal(stored[1:], launched[:-1])  # step k + 1 plays the chunks launched after step k
    assert model._launched is not None, "the last launched step is still pending"
    pending, first_row = model._launched, model.replay_buffer.pos
    model.learn(8, reset_num_timesteps=True)  # resets the envs, which discards the pending step
    played = model.replay_buffer.actions[first_row]
    assert not np.array_equal(played, pending), "a new learn() plays chunks chosen for its own first observation"
    with pytest.raises(ValueError, match=r"needs the env wrapped in dsrl.envs.prefetch.PrefetchVecEnv"):
        make_model(steering_policy, overlap_env_steps=True, learning_starts=0).learn(2)


def test_cuda_graphs_refuse_a_base_policy_that_cannot_be_captured(steering_policy):
    assert LeRobotDiffusionAdapter.graph_capturable is False
    steering_policy.graph_capturable = False
    assert PolicyEmbeddingView(steering_policy).graph_capturable is False
    model = make_model(steering_policy, _init_setup_model=False)
    model.device = torch.device("cuda")  # the check comes before anything touches the device
    message = r"cuda_graphs=True \(train.cuda_graphs\) on cuda, but DiffusionPolicy cannot sample inside a CUDA graph"
    with pytest.raises(ValueError, match=message):
        model._setup_model()
    model.device = torch.device("cpu")  # no effect on a CPU
    model._setup_model()
    assert model.gradient_steps_to_run() == (model._sac_gradients, model._distillation_gradients)


@pytest.mark.parametrize(
    "settings",
    [
        {},
        {"precompute_distillation": True},
        {
            "policy_kwargs": dict(net_arch=[32, 32], n_critics=3, target_critics=2),
            "actor_combine_type": "mean",
            "kl_to_base_noise": True,
            "kl_prior_noise_scale": 0.5,
            "noise_action_dim": 2,
        },
    ],
    ids=["fresh_noise", "pairs", "redq_kl_low_dim"],
)
def test_compiled_gradient_steps_compute_the_eager_gradients(steering_policy, settings):
    """With inductor's random draws made eager's (fallback_random), the compiled steps give the eager gradients."""
    from torch._dynamo.utils import counters
    from torch._inductor import config as inductor_config

    with inductor_config.patch(fallback_random=True):
        model = make_model(steering_policy, torch_compile=True, buffer_size=200, **settings)
        compiled_before = counters["stats"]["unique_graphs"]
        model.learn(60)  # 20 train calls of 2 gradient steps and 3 distillation steps
        assert counters["stats"]["unique_graphs"] > compiled_before, "the gradient steps were compiled"
        sac_step, distillation_step = model._gradient_steps
        assert sac_step != model._sac_gradients and distillation_step != model._distillation_gradients
        assert_gradient_steps_give_the_eager_gradients(model)


@pytest.mark.parametrize("torch_compile", [False, True], ids=["eager", "compiled"])
def test_bf16_autocast_gradient_steps_give_float32_gradients_close_to_full_precision_ones(
    steering_policy, torch_compile
):
    """Each gradient (and the stats) within 3% of the float32 one, far less than another batch moves it (20-70% on
    most weights); without the actor's and critics' output layers in float32 the log-probabilities near tanh's
    saturation and the TD errors lost most of their digits (critic gradients 5-12% off, the critic loss 6%)."""
    from torch._inductor import config as inductor_config

    with inductor_config.patch(fallback_random=True):
        model = make_model(steering_policy, autocast_bf16=True, torch_compile=torch_compile, buffer_size=200)
        model.learn(60)
        assert model.actor.mu.weight.dtype == torch.float32
        batch = model.replay_buffer.sample(64)[:5]
        for step, full_precision, inputs in zip(
            model._gradient_steps, (model._sac_gradients, model._distillation_gradients), (batch, batch[:1])
        ):
            torch.manual_seed(5)
            got = step(*inputs)
            torch.manual_seed(5)
            expected = full_precision(*inputs)
            for a, b in zip(got, expected):
                assert a.dtype == b.dtype == torch.float32
                assert torch.linalg.vector_norm(a - b) <= 0.03 * torch.linalg.vector_norm(b)


def test_set_random_seed_reseeds_the_warm_up_noise_so_a_resumed_run_does_not_repeat_its_first_draws(steering_policy):
    model = make_model(steering_policy, seed=0)
    opening = np.stack([model.noise_space.sample() for _ in range(3)])
    model.set_random_seed(7)  # as a resume does, with the seed plus the steps already run
    resumed = np.stack([model.noise_space.sample() for _ in range(3)])
    model.set_random_seed(7)
    np.testing.assert_array_equal(np.stack([model.noise_space.sample() for _ in range(3)]), resumed)
    assert not np.array_equal(resumed, opening)
    assert np.array_equal(make_model(steering_policy, seed=0).noise_space.sample(), opening[0]), "seeded as before"


def test_torch_compile_without_a_working_compiler_fails_at_set_up_naming_the_setting(steering_policy):
    """A machine whose C++ compiler is missing is told so when the agent is built, not at its first update."""
    import torch._dynamo
    from torch._inductor import config as inductor_config

    torch._dynamo.reset()
    with inductor_config.patch({"cpp.cxx": (None, "/nonexistent/g++"), "fx_graph_cache": False}):
        with pytest.raises(RuntimeError, match=r"train\.torch_compile.*C\+\+ compiler.*torch_compile=false"):
            make_model(steering_policy, torch_compile=True)
    torch._dynamo.reset()


def assert_gradient_steps_give_the_eager_gradients(model):
    """The gradient steps ``train`` runs (``model._gradient_steps``) give what the eager methods give on one batch,
    with the same random draws."""
    batch = model.replay_buffer.sample(32)[:5]
    pair_batch = next(batches(model._distillation_data(32), 1, 32))
    sac_step, distillation_step = model._gradient_steps
    for step, eager, inputs in (
        (sac_step, model._sac_gradients, batch),
        (distillation_step, model._distillation_gradients, pair_batch),
    ):
        torch.manual_seed(5)
        got = [t.clone() for t in step(*inputs)]  # a CUDA graph's outputs are overwritten by its next replay
        torch.manual_seed(5)
        expected = eager(*inputs)
        assert len(got) == len(expected)
        for a, b in zip(got, expected):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_ensemble_critic_equals_separate_critics():
    from gymnasium import spaces
    from stable_baselines3.common.torch_layers import FlattenExtractor

    obs_space = spaces.Box(-1, 1, (5,))
    act_space = spaces.Box(-1, 1, (3,))
    critic = EnsembleCritic(obs_space, act_space, [16, 16], FlattenExtractor(obs_space), 5, nn.Tanh, n_critics=3)
    obs, actions = torch.randn(7, 5), torch.randn(7, 3)
    outputs = critic(obs, actions)
    assert len(outputs) == 3 and outputs[0].shape == (7, 1)
    layers = list(critic.q_net)
    for member, value in enumerate(outputs):
        x = torch.cat([obs, actions], dim=1)
        for layer in layers:
            if hasattr(layer, "weight") and layer.weight.ndim == 3 and layer.weight.shape[1] != 1:
                x = x @ layer.weight[member] + layer.bias[member, 0]
            elif hasattr(layer, "weight"):
                x = nn.functional.layer_norm(x, x.shape[-1:]) * layer.weight[member, 0] + layer.bias[member, 0]
            else:
                x = layer(x)
        torch.testing.assert_close(value, x)
    critic.subset_size = 2
    drawn = [critic.all_q(obs, actions) for _ in range(40)]
    members = {[torch.equal(d[i], outputs[m]) for m in range(3)].index(True) for d in drawn for i in range(2)}
    assert all(d.shape == (2, 7, 1) and not torch.equal(d[0], d[1]) for d in drawn) and members == {0, 1, 2}


def test_a_partly_filled_distillation_buffer_round_trips_through_a_compact_checkpoint(steering_policy, tmp_path):
    model = make_model(steering_policy, precompute_distillation=True, buffer_size=2000)
    model.learn(60)  # 30 rows of 2 env slots, paired
    save_replay_buffer(model, str(tmp_path / "buffer.pkl"))
    loaded = make_model(steering_policy, precompute_distillation=True, buffer_size=2000)
    load_replay_buffer(loaded, str(tmp_path / "buffer.pkl"))
    original, restored = model.replay_buffer, loaded.replay_buffer
    assert (restored.pos, restored.rows_added, restored.rows_paired) == (30, 30, 30)
    for name in ("observations", "actions", "distill_noise", "distill_actions"):
        assert (
            getattr(restored, name).shape
            == getattr(original, name).shape
            == (1000, 2, getattr(original, name).shape[2])
        )
        np.testing.assert_array_equal(getattr(restored, name), getattr(original, name), err_msg=name)


def test_init_rollout_steps_counts_vector_steps_then_an_update_comes_before_the_actor_acts(steering_policy):
    """The authors' init_rollout_steps: n vector steps of base-policy rollouts (n x n_envs transitions)."""
    assert (learning_starts(1501, 4), learning_starts(5, 2), learning_starts(0, 4)) == (6003, 9, 0)
    model = make_model(steering_policy, learning_starts=learning_starts(5, 2), gradient_steps=1)
    warmup_draws, updates_when_acting = [], []
    sample, predict_noise = model.noise_space.sample, model.predict_noise
    model.noise_space.sample = lambda: warmup_draws.append(model.num_timesteps) or sample()
    model.predict_noise = lambda *a, **k: updates_when_acting.append(model._n_updates) or predict_noise(*a, **k)
    model.learn(total_timesteps=14)
    assert warmup_draws == [0, 0, 2, 2, 4, 4, 6, 6, 8, 8]
    assert updates_when_acting == [1, 2]
